"""The benchmark's smallest run works end to end and writes every field of its result file.

Speed targets are checked by `make bench` itself, never here: this only proves that the
measurement runs and reports what it promises.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.cli import main


@pytest.mark.e2e
def test_bench_smallest_run_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    code = main(
        [
            "--sizes", "200,400",
            "--full-max", "200",
            "--reference-size", "200",
            "--repeat", "2",
            "--fanout-size", "300",
            "--fanout-pages", "1",
            "--workers", "1,2",
            "--write-rows", "30",
            "--report-only",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    result = orjson.loads(out.read_bytes())
    assert {"started_at", "command", "machine", "options", "sizes", "fanout"} <= set(result)
    assert {"dynamodb_write_strategies", "targets", "ok"} <= set(result)
    full, ingest_only = result["sizes"]
    assert (full["mode"], ingest_only["mode"]) == ("full", "ingest-only")
    for entry in (full, ingest_only):
        pipeline = entry["pipeline"]
        assert pipeline["status"] == "succeeded", pipeline["errors"]
        assert pipeline["records"] == 3 * entry["records_per_resource"]
        assert pipeline["records_per_s"] > 0
        assert set(pipeline["memory_mb"]) == {
            "ingest_peak",
            "ingest_baseline",
            "load_peak",
            "load_baseline",
        }
        assert pipeline["memory_mb"]["ingest_peak"] >= pipeline["memory_mb"]["ingest_baseline"] > 0
        put = pipeline["aws"]["ingest"]["put_records"]
        assert put["records"] == pipeline["records"]
        assert entry["calls_per_1000"]["kinesis"] > 0
    assert full["floor"]["records"] == full["pipeline"]["records"]
    assert len(full["pipeline_attempts_records_per_s"]) == 2
    assert full["pipeline"]["records_per_s"] == max(full["pipeline_attempts_records_per_s"])
    assert full["floor"]["records_per_s"] == max(full["floor_attempts_records_per_s"])
    assert full["ratio"] > 0
    assert full["floor_calls_per_1000"]["dynamodb"] > 0
    assert full["second_run"]["status"] == "succeeded"
    assert full["pipeline"]["memory_mb"]["load_peak"] > 0
    assert result["fanout"]["identical"] is True
    assert [run["work_items"] for run in result["fanout"]["runs"]] == [9, 9]  # 3 pages x 3
    names = " ".join(target["name"] for target in result["targets"])
    for fragment in (
        "x floor",
        "peak memory",
        "PutRecords",
        "5 MiB",
        "unchanged re-run",
        "fan-out",
    ):
        assert fragment in names
    unchanged = next(t for t in result["targets"] if "unchanged re-run" in t["name"])
    assert unchanged["met"], unchanged["value"]
    writes = result["dynamodb_write_strategies"]
    assert writes["read_compare_batch_write"]["rows_per_s"] > 0
    assert writes["conditional_put"]["rows_per_s"] > 0
