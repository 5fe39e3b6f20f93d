"""`python -m localcloud run` and `report`: what a user gets back about monitoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcloud.cli import main

pytestmark = pytest.mark.e2e


def test_run_json_has_metrics_alarms_and_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    code = main(["run", "--records", "12", "--json", "--state-dir", str(state)])
    summary = json.loads(capsys.readouterr().out)

    assert code == 0
    fetched = sum(counts["fetched"] for counts in summary["entities"].values())
    assert summary["metrics"]["RecordsFetched"] == fetched == 36
    assert summary["metrics"]["RunSucceeded"] == 1
    assert summary["alarms"]
    assert set(summary["alarms"].values()) == {"OK"}
    assert summary["report"] == str(state / "report" / "index.html")
    assert Path(summary["report"]).is_file()


def test_report_runs_the_pipeline_several_times_and_writes_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code = main(
        [
            "report",
            "--out",
            str(out),
            "--runs",
            "2",
            "--records",
            "8",
            "--state-dir",
            str(tmp_path / "state"),
        ]
    )
    assert code == 0
    assert f"health report: {out / 'index.html'}" in capsys.readouterr().out
    health = json.loads((out / "health.json").read_text())
    assert [run["outcome"] for run in health["runs"]] == ["succeeded", "succeeded"]
    assert [run["counts"]["fetched"] for run in health["runs"]] == [24, 24]
    page = (out / "index.html").read_text()
    for chart in health["charts"]:
        assert chart["title"] in page
    fetched = next(c for c in health["charts"] if c["title"].startswith("Fetched"))
    users = next(line for line in fetched["lines"] if line["label"] == "users fetched")
    assert users["total"] == 16  # both runs
    assert users["runs"] == [8, 8]  # each run's own value, as the page's bars show it
    published = next(line for line in fetched["lines"] if line["label"] == "users published")
    assert published["runs"] == [8, 0]  # the second run found nothing changed


def test_report_refuses_nonsense(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["report", "--out", str(tmp_path), "--runs", "0"]) == 2
    assert "--runs" in capsys.readouterr().err
