"""Fan-out: page ranges as SQS work items, published by the ingest_worker function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import handlers, wiring
from chalicelib.ingest.fanout import WorkItem, plan_ranges
from chalicelib.ingest.page import SourceError
from chalicelib.runs.ledger import RunProgress
from chalicelib.settings import get_settings
from localcloud.run_report import RunReport
from localcloud.stack import LocalCloud
from tests.helpers.factories import use_fresh_stage

RECORDS = 95
FAN_OUT = {"PIPELINE_PAGE_SIZE": "10", "PIPELINE_PAGES_PER_WORKER": "3"}
"""10 pages per resource, 3 per work item: 4 work items per resource."""


@given(pages=st.integers(min_value=0, max_value=5000), per_worker=st.integers(1, 700))
def test_ranges_cover_every_page_once_and_the_last_is_open(pages: int, per_worker: int) -> None:
    ranges = plan_ranges(pages, per_worker)
    assert ranges[0][0] == 1
    assert ranges[-1][1] is None
    covered: list[int] = []
    for first, last in ranges[:-1]:
        assert last is not None
        assert last - first + 1 == per_worker
        covered += range(first, last + 1)
    covered += range(ranges[-1][0], max(pages, 1) + 1)
    assert covered == list(range(1, max(pages, 1) + 1))
    assert max(pages, 1) - ranges[-1][0] < per_worker


@given(
    first=st.integers(1, 10**6),
    length=st.none() | st.integers(0, 10**6),
    resource=st.sampled_from(["users", "tracks", "listen_history"]),
)
def test_work_items_survive_the_queue(first: int, length: int | None, resource: str) -> None:
    item = WorkItem("run-1", resource, first, None if length is None else first + length)
    assert WorkItem.from_json(item.to_json()) == item
    assert item.work_id.startswith(f"{resource}#{first}-")


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "{}",
        '{"run_id": "r", "resource": "users", "first_page": 0, "last_page": 2}',
        '{"run_id": "r", "resource": "users", "first_page": 5, "last_page": 2}',
    ],
)
def test_a_broken_work_item_is_refused(body: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        WorkItem.from_json(body)


@pytest.fixture
def runs(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> RunProgress:
    return wiring.progress(use_fresh_stage(monkeypatch, "fanout"))


def _manifest(progress: RunProgress, run_id: str) -> dict[str, Any]:
    found = wiring.manifests(get_settings()).get(run_id)
    assert found is not None
    return found


def test_a_retried_fan_out_sends_the_plan_recorded_first(runs: RunProgress) -> None:
    state = runs.begin("run-plan", "2026-01-01T00:00:00+00:00", ["users"])
    assert not state.fanned_out("users")
    assert runs.fan_out("run-plan", "users", work_items=4, pages=10) == (4, 10)
    # a retry that saw more pages still sends the first plan: the same work ids
    assert runs.fan_out("run-plan", "users", work_items=5, pages=13) == (4, 10)
    state = runs.begin("run-plan", "2026-01-01T00:00:00+00:00", ["users"])
    assert state.fanned_out("users")
    assert not state.dispatched("users")
    runs.mark_dispatched("run-plan", "users")
    assert runs.begin("run-plan", "2026-01-01T00:00:00+00:00", ["users"]).dispatched("users")


def test_a_work_item_counts_once_and_the_last_one_publishes_the_run(runs: RunProgress) -> None:
    run_id = "run-finish"
    runs.begin(run_id, "2026-01-01T00:00:00+00:00", ["users", "tracks"])
    runs.fan_out(run_id, "users", work_items=2, pages=4)
    counts = {"fetched.users": 20, "published.users": 20}
    assert runs.finish_work_item(run_id, "users", "users#1-2", counts)
    assert not runs.finish_work_item(run_id, "users", "users#1-2", counts)  # re-delivered
    assert runs.work_item_done(run_id, "users#1-2")
    assert not runs.work_item_done(run_id, "users#3-end")
    assert runs.finish_work_item(run_id, "users", "users#3-end", counts)
    assert not runs.finish_run_if_complete(run_id, "now")  # tracks is not complete
    runs.set_status_unless_final(run_id, "fanned_out")
    runs.commit(run_id, "tracks", [], 0, complete=True)
    assert runs.finish_run_if_complete(run_id, "now")
    assert not runs.finish_run_if_complete(run_id, "later")  # only one marks it
    runs.set_status_unless_final(run_id, "fanned_out")  # a late ingest changes nothing
    manifest = _manifest(runs, run_id)
    assert manifest["ingest_status"] == "published"
    assert manifest["ingest_finished_at"] == "now"
    assert manifest["fetched.users"] == 40
    assert manifest["work_done.users"] == 2


def test_a_failed_run_is_never_published_by_a_worker(runs: RunProgress) -> None:
    run_id = "run-failed"
    runs.begin(run_id, "2026-01-01T00:00:00+00:00", ["users"])
    runs.fan_out(run_id, "users", work_items=1, pages=1)
    wiring.manifests(get_settings()).set_fields(run_id, {"ingest_status": "failed"})
    runs.finish_work_item(run_id, "users", "users#1-end", {"fetched.users": 1})
    assert not runs.finish_run_if_complete(run_id, "now")
    assert _manifest(runs, run_id)["ingest_status"] == "failed"


def test_a_work_item_whose_pages_cannot_be_read_raises_for_sqs_to_retry(
    runs: RunProgress, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_API_URL", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("PIPELINE_MAX_RETRIES", "0")
    wiring.reset()
    runs.begin("run-down", "2026-01-01T00:00:00+00:00", ["users"])
    body = WorkItem("run-down", "users", 1, 3).to_json()
    with pytest.raises(SourceError):
        handlers.handle_work({"Records": [{"body": body}]}, None)
    assert "work_done.users" not in _manifest(runs, "run-down")


def _stored(cloud: LocalCloud) -> dict[str, list[dict[str, Any]]]:
    return {
        f"{sink}/{entity}": cloud.stored_items(sink, entity)
        for sink in ("dynamodb", "postgres")
        for entity in ("users", "tracks", "listen_history")
    }


def _run(state_dir: Path, env: dict[str, str], workers: int = 2) -> tuple[RunReport, Any, Any]:
    with LocalCloud(state_dir, records=RECORDS, seed=5, extra_env=env, workers=workers) as cloud:
        report = cloud.run()
        stored = _stored(cloud)
        manifest = wiring.manifests(cloud.settings).get(report.run_id)
        redelivered = None
        if report.status == "succeeded" and env.get("PIPELINE_PAGES_PER_WORKER") != "0":
            item = WorkItem(report.run_id, "tracks", 4, 6)
            redelivered = handlers.handle_work({"Records": [{"body": item.to_json()}]}, None)
            assert wiring.manifests(cloud.settings).get(report.run_id) == manifest
    return report, (stored, manifest), redelivered


@pytest.mark.e2e
def test_a_fanned_out_run_stores_what_a_single_ingest_stores(tmp_path: Path) -> None:
    fanned, (stored, manifest), redelivered = _run(tmp_path / "fan", FAN_OUT, workers=2)
    assert fanned.status == "succeeded", fanned.errors
    single, (single_stored, _), _ = _run(
        tmp_path / "single", {**FAN_OUT, "PIPELINE_PAGES_PER_WORKER": "0"}
    )
    assert single.status == "succeeded", single.errors
    assert stored == single_stored
    assert manifest is not None
    assert manifest["ingest_status"] == "published"
    for entity in ("users", "tracks", "listen_history"):
        assert manifest[f"work_items.{entity}"] == manifest[f"work_done.{entity}"] == 4
        assert manifest[f"fetched.{entity}"] == RECORDS
        assert manifest[f"pages.{entity}"] == 10
        assert fanned.entities[entity]["work_items"] == 4
    # a message delivered once more (SQS is at-least-once) is recognised and counts nothing
    assert redelivered is not None
    assert orjson.loads(orjson.dumps(redelivered))["work_items"][0]["fetched"] == 0
