"""A hostile or changing source (issue 11, source side): never a crash, never a false success,
never a run without end.

The end-to-end tests run the whole local cloud against the fake API with deterministic source
faults (`localcloud/fakeapi/source_faults.py`), one fault per resource so that one run shows
that a resource failing leaves the others untouched. Each asserts what both sinks store, what is
quarantined, the run status, the error text (resource, URL, key) and the log lines, and that
the run ended; time is bounded by the configured deadlines, never by a stopwatch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.deadletter.quarantine import QuarantinedRecord
from chalicelib.ingest.run import IngestFailed, new_run_id, run_ingest
from chalicelib.model.contract import entity_key, validate_item
from chalicelib.model.envelope import decode_envelope
from chalicelib.runs.page_ledger import LEDGER_ITEM_BYTES, PageLedger
from chalicelib.settings import get_settings
from localcloud.fakeapi import FakeApiServer, generate_item
from localcloud.fakeapi.source_faults import OVERFLOW_TIMESTAMP, SourceFaults
from localcloud.run_report import RunReport
from localcloud.stack import LocalCloud
from tests.helpers.factories import use_fresh_stage

SINKS = ("dynamodb", "postgres")
RECORDS = 250  # 3 pages of 100 per resource
SEED = 11


@dataclass
class Outcome:
    report: RunReport
    stored: dict[tuple[str, str], list[dict[str, Any]]]
    quarantined: list[QuarantinedRecord]
    log: list[dict[str, Any]]
    faults: SourceFaults
    api: FakeApiServer


def run_with_faults(
    tmp_path: Path, faults: dict[str, str], env: dict[str, str] | None = None, **options: Any
) -> Outcome:
    source_faults = SourceFaults(faults, **options)
    environment = {"PIPELINE_MAX_RETRIES": "1", "PIPELINE_BACKOFF_FACTOR_S": "0", **(env or {})}
    with (
        FakeApiServer(records=RECORDS, seed=SEED, source_faults=source_faults) as api,
        LocalCloud(tmp_path / "state", api_url=api.url, extra_env=environment) as cloud,
    ):
        report = cloud.run()
        stored = {
            (sink, entity): cloud.stored_items(sink, entity)
            for sink in SINKS
            for entity in ("users", "tracks", "listen_history")
        }
        quarantined = list(wiring.quarantine(cloud.settings).records(report.run_id))
        log = [json.loads(line) for line in cloud.log_path.read_text().splitlines() if line]
    return Outcome(report, stored, quarantined, log, source_faults, api)


def served(entity: str, indexes: range | list[int]) -> list[dict[str, Any]]:
    """The rows the fake API holds at `indexes`, as a store holds them (sorted by key)."""
    rows = [validate_item(entity, generate_item(entity, i, RECORDS, SEED)) for i in indexes]
    return sorted(rows, key=lambda row: entity_key(entity, row))


def assert_stored(outcome: Outcome, entity: str, rows: list[dict[str, Any]]) -> None:
    for sink in SINKS:
        assert outcome.stored[(sink, entity)] == rows, (sink, entity)


def errors_about(outcome: Outcome, entity: str) -> list[str]:
    return [error for error in outcome.report.errors if f"'{entity}'" in error]


def log_lines(outcome: Outcome, message: str, entity: str) -> list[dict[str, Any]]:
    return [
        line
        for line in outcome.log
        if line.get("message") == message and line.get("entity") == entity
    ]


# --- isolation: one item, one page, one resource --------------------------------------------


@pytest.mark.e2e
def test_a_bad_item_is_quarantined_and_a_bad_page_fails_only_its_resource(tmp_path: Path) -> None:
    outcome = run_with_faults(
        tmp_path,
        {
            "overflow-timestamp": "users",
            "nested-json": "tracks",
            "truncated-last-page": "listen_history",
        },
    )
    report = outcome.report

    assert report.status == "failed"
    # users: one item past year 9999 is quarantined, naming its field; the page goes on
    assert_stored(outcome, "users", served("users", [i for i in range(RECORDS) if i != 7]))
    [kept] = outcome.quarantined  # the only record quarantined in the run
    assert kept.origin == "ingest-p1-i7"
    assert "updated_at" in kept.reason
    assert "out of range" in kept.reason
    assert json.loads(kept.payload)["updated_at"] == OVERFLOW_TIMESTAMP
    assert report.entities["users"]["quarantined"] == 1
    assert not errors_about(outcome, "users")
    [line] = log_lines(outcome, "record quarantined", "users")  # logged once, with its place
    overflowing_id = generate_item("users", 7, RECORDS, SEED)["id"]
    assert line["run_id"] == report.run_id
    assert line["key"] == str(overflowing_id)
    assert line["page"] == 1
    assert "/users?page=1&size=100" in line["url"]

    # tracks: page 2 nests too deeply to parse: page 1 is stored, the resource fails by URL
    assert_stored(outcome, "tracks", served("tracks", range(100)))
    [error] = errors_about(outcome, "tracks")
    assert "nested too deeply" in error
    assert "/tracks?page=2&size=100" in error
    failures = log_lines(outcome, "resource ingestion failed", "tracks")
    assert failures
    assert all(line["run_id"] == report.run_id for line in failures)
    assert all("/tracks?page=2&size=100" in line["url"] for line in failures)

    # listen_history: the announced last page is empty: 200 of 250 stored, not a success
    assert_stored(outcome, "listen_history", served("listen_history", range(200)))
    [error] = errors_about(outcome, "listen_history")
    assert "incomplete page: page 3 of 3 holds 0 items" in error
    assert "/listen_history?page=3&size=100" in error
    assert report.event is None  # no DatasetUpdated for a failed run
    assert outcome.faults.injected["nested-json"] >= 1


# --- completeness against the source --------------------------------------------------------


@pytest.mark.e2e
def test_a_source_that_changes_or_ignores_size_fails_without_extra_traffic(
    tmp_path: Path,
) -> None:
    outcome = run_with_faults(
        tmp_path,
        {"delete-front": "users", "ignore-size": "tracks", "growing-pages": "listen_history"},
    )
    report = outcome.report

    assert report.status == "failed"
    assert not outcome.quarantined
    # users: 20 rows deleted at the front after page 1: offsets shift, total drops
    assert_stored(outcome, "users", served("users", range(100)))
    [error] = errors_about(outcome, "users")
    assert "changed under the run" in error
    assert "total 250" in error
    assert "/users?page=2&size=100" in error
    # ... and Lambda's retries of the run, resuming after page 1, see it too
    assert report.ingest_invocations == 3

    # tracks: 1,000 items for a page of 100: refused at page 1, nothing published, no paging on
    assert_stored(outcome, "tracks", [])
    [error] = errors_about(outcome, "tracks")
    assert "more than its size 100" in error
    assert "/tracks?page=1&size=100" in error
    assert report.entities["tracks"]["fetched"] == 0
    assert outcome.faults.injected["ignore-size"] == report.ingest_invocations  # page 1 each

    # listen_history: every page announces one more page and repeats page 1
    assert_stored(outcome, "listen_history", served("listen_history", range(100)))
    [error] = errors_about(outcome, "listen_history")
    assert "changed under the run" in error
    # the last of the run's 3 attempts resumes at page 2 and finds another total than page 1's
    assert "total 200" in error
    assert "300" in error
    assert "/listen_history?page=2&size=100" in error
    assert outcome.faults.injected["growing-pages"] <= report.ingest_invocations * 10
    assert report.event is None


# --- bounded time and memory ----------------------------------------------------------------


@pytest.mark.e2e
def test_a_dripping_server_and_a_huge_page_fail_within_their_bounds(tmp_path: Path) -> None:
    deadline_s, read_timeout_s = 3.0, 2.0
    outcome = run_with_faults(
        tmp_path,
        {"slow-drip": "users", "huge-page": "tracks"},
        env={
            "PIPELINE_REQUEST_DEADLINE_S": str(deadline_s),
            "PIPELINE_REQUEST_TIMEOUT_S": str(read_timeout_s),
            "PIPELINE_MAX_RESPONSE_BYTES": str(1024 * 1024),
        },
        drip_interval=0.5,
        huge_page_bytes=64 * 1024 * 1024,
    )
    report = outcome.report

    assert report.status == "failed"
    [error] = errors_about(outcome, "users")
    assert "not complete within PIPELINE_REQUEST_DEADLINE_S (3 s" in error
    assert "/users?page=1&size=100" in error
    [error] = errors_about(outcome, "tracks")
    assert "larger than PIPELINE_MAX_RESPONSE_BYTES (1,048,576 bytes)" in error
    assert "/tracks?page=1&size=100" in error
    assert not outcome.quarantined
    assert_stored(outcome, "users", [])
    assert_stored(outcome, "tracks", [])
    assert_stored(outcome, "listen_history", served("listen_history", range(RECORDS)))
    # The drip alone would last hours (~25 KB at 2 bytes/s); each of the 3 attempts of the
    # run is bounded by the deadline plus one read timeout: a generous bound on the whole run.
    bound = report.ingest_invocations * (deadline_s + read_timeout_s) + 120
    assert report.timings["pipeline_s"] < bound


# --- fan-out: the same guarantees when a resource is split over ingest_worker functions ----


@pytest.mark.e2e
def test_fanned_out_resources_keep_isolation_and_completeness(tmp_path: Path) -> None:
    outcome = run_with_faults(
        tmp_path,
        {
            "overflow-timestamp": "users",
            "delete-front": "tracks",
            "truncated-last-page": "listen_history",
        },
        env={"PIPELINE_PAGE_SIZE": "50", "PIPELINE_PAGES_PER_WORKER": "2"},
    )
    report = outcome.report

    assert report.status == "failed"
    assert report.entities["users"]["work_items"] == 3
    assert_stored(outcome, "users", served("users", [i for i in range(RECORDS) if i != 7]))
    [kept] = outcome.quarantined  # the only record quarantined in the run
    assert kept.entity == "users"
    assert "updated_at" in kept.reason
    [line] = log_lines(outcome, "record quarantined", "users")  # by the worker, once
    assert line["run_id"] == report.run_id
    assert line["key"] == str(generate_item("users", 7, RECORDS, SEED)["id"])
    assert "/users?page=1&size=50" in line["url"]
    # tracks: the planner read total 250; after the deletion every worker finds 230
    assert report.entities["tracks"]["work_items"] == 3
    assert any("dead-letter" in error for error in report.errors)
    failed_items = log_lines(outcome, "work item failed", "tracks")
    assert failed_items
    for line in failed_items:  # each delivery of a work item: run id, range, URL, what happened
        assert line["run_id"] == report.run_id
        assert "changed under the run" in line["error"]
        assert "announced total 250 when the run planned its pages, 230 now" in line["error"]
        assert "/tracks?page=" in line["url"]
    # listen_history: the empty last page fails the last work item, the others are stored
    stored_histories = outcome.stored[("dynamodb", "listen_history")]
    assert stored_histories == served("listen_history", range(200))
    assert outcome.stored[("postgres", "listen_history")] == stored_histories
    assert report.event is None


@pytest.mark.e2e
def test_fanned_out_resources_fail_on_unparseable_oversized_or_growing_pages(
    tmp_path: Path,
) -> None:
    """The page faults met by ingest_worker functions (pages after the planner's page 1): a
    page nested too deeply, a server ignoring `size`, pagination that never ends."""
    outcome = run_with_faults(
        tmp_path,
        {"nested-json": "users", "ignore-size": "tracks", "growing-pages": "listen_history"},
        env={"PIPELINE_PAGE_SIZE": "50", "PIPELINE_PAGES_PER_WORKER": "1"},
    )
    report = outcome.report

    assert report.status == "failed"
    assert not outcome.quarantined
    assert report.event is None
    # users: 5 pages, one work item each; page 2 cannot be parsed: that work item fails on
    # each delivery, the other pages are stored
    assert report.entities["users"]["work_items"] == 5
    assert_stored(outcome, "users", served("users", [*range(50), *range(100, RECORDS)]))
    failed = log_lines(outcome, "work item failed", "users")
    assert failed
    for line in failed:
        assert line["run_id"] == report.run_id
        assert "nested too deeply" in line["error"]
        assert "/users?page=2&size=50" in line["error"]
    assert any("dead-letter" in error for error in report.errors), report.errors
    # tracks: page 1 already holds 500 items: the planner refuses it, no work item is sent
    assert_stored(outcome, "tracks", [])
    [error] = errors_about(outcome, "tracks")
    assert "more than its size 50" in error
    assert "/tracks?page=1&size=50" in error
    assert report.entities["tracks"]["fetched"] == 0
    # listen_history: page 1 announces 2 pages (2 work items); the worker's page 2 announces 3
    assert report.entities["listen_history"]["work_items"] == 2
    assert_stored(outcome, "listen_history", served("listen_history", range(50)))
    failed = log_lines(outcome, "work item failed", "listen_history")
    assert failed
    for line in failed:
        assert "changed under the run" in line["error"]
        assert "/listen_history?page=2&size=50" in line["error"]
    # a page or two per delivery of each work item and attempt of the run, never followed on
    # toward PIPELINE_MAX_PAGES
    assert outcome.faults.injected["growing-pages"] < 20


# --- the page ledger holds pages of any size ------------------------------------------------


def test_a_page_of_any_size_fits_the_ledger(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fresh_stage(monkeypatch, "ledger")
    progress = wiring.progress(get_settings())
    histories = PageLedger("listen_history", 1)
    histories.entries = [
        (i, [i, f"2025-07-13T01:47:{i % 60:02d}.{i:06d}"], f"2025-07-14T00:00:00.{i:06d}")
        for i in range(5000)
    ]
    unique = PageLedger("users", 2)  # incompressible keys: split over several items
    unique.entries = [(i, [i * 7919 % 10**9], f"x{i * 104729:x}" * 12) for i in range(40_000)]
    assert len(json.dumps(unique.entries)) > 3 * LEDGER_ITEM_BYTES
    assert len(unique.to_items("run")) > 1

    progress.write_pages("run-ledger", [histories, unique])

    back = {page.page_id: page for page in progress.pages("run-ledger")}
    assert set(back) == {histories.page_id, unique.page_id}
    assert back[histories.page_id].entries == histories.entries
    assert back[unique.page_id].entries == unique.entries


# --- property: arbitrary JSON as items and as whole pages ------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
VALID_USER = st.builds(
    lambda i, when: {
        "id": i,
        "first_name": "A",
        "last_name": "B",
        "email": "a@b.c",
        "gender": "x",
        "favorite_genres": "Rock",
        "created_at": when,
        "updated_at": when,
    },
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(["2025-07-13T01:47:15.825923", "2025-07-13T01:47:15", OVERFLOW_TIMESTAMP]),
)
ITEM = st.one_of(JSON, VALID_USER, VALID_USER.map(lambda user: {**user, "id": str(user["id"])}))


@st.composite
def page_bodies(draw: st.DrawFn) -> str:
    """A body shaped like a page (the same one served for every page): the envelope of its
    items, often with some of `total`, `page`, `size` and `pages` announcing anything else."""
    items = draw(st.lists(ITEM, max_size=12))
    page = {
        "items": items,
        "total": len(items),
        "page": 1,
        "size": 10,
        "pages": -(-len(items) // 10),
    }
    for name in draw(st.sets(st.sampled_from(["total", "page", "size", "pages"]))):
        page[name] = draw(st.integers(min_value=-1, max_value=14))
    return json.dumps(page)


class _PageServer:
    """Serves one hypothesis example: either pages of `items` by the contract, or `body`."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.body: bytes | None = None

    def __call__(self, request: Any) -> Any:
        from werkzeug import Response

        if self.body is not None:
            return Response(self.body, 200, content_type="application/json")
        page, size = int(request.args["page"]), int(request.args["size"])
        start = (page - 1) * size
        return Response(
            json.dumps(
                {
                    "items": self.items[start : start + size],
                    "total": len(self.items),
                    "page": page,
                    "size": size,
                    "pages": -(-len(self.items) // size),
                }
            ),
            200,
            content_type="application/json",
        )


@pytest.fixture(scope="module")
def page_server() -> Iterator[tuple[str, _PageServer]]:
    from pytest_httpserver import HTTPServer

    handler = _PageServer()
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/users").respond_with_handler(handler)
    server.start()
    yield server.url_for("/").rstrip("/"), handler
    server.stop()


@pytest.fixture
def anyjson_stage(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, page_server: tuple[str, _PageServer]
) -> _PageServer:
    """One fresh stage for all the examples (each example is a run of its own)."""
    url, handler = page_server
    use_fresh_stage(
        monkeypatch,
        "anyjson",
        PIPELINE_API_URL=url,
        PIPELINE_RESOURCES="users",
        PIPELINE_PAGE_SIZE="10",
        PIPELINE_MAX_RETRIES="0",
    )
    return handler


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    items=st.lists(ITEM, max_size=25),
    body=st.none() | JSON.map(json.dumps) | page_bodies(),
)
def test_arbitrary_json_is_stored_quarantined_or_failed_never_lost(
    anyjson_stage: _PageServer, items: list[Any], body: str | None
) -> None:
    handler = anyjson_stage
    handler.items, handler.body = items, None if body is None else body.encode()
    deps = wiring.ingest_dependencies()
    run_id = new_run_id()
    try:
        result = run_ingest(deps, run_id=run_id)
        error = None
    except IngestFailed as failed:  # the only exception a run may end with
        result, error = None, str(failed)
    finally:
        deps.publisher.close()

    manifest = wiring.manifests(get_settings()).get(run_id) or {}
    assert manifest["ingest_status"] in ("published", "failed")  # a summary, whatever happened
    ledger = list(wiring.progress(get_settings()).pages(run_id))
    positions = [(page.number, position) for page in ledger for position, _, _ in page.entries]
    assert len(positions) == len(set(positions))  # nothing counted twice
    quarantined = list(wiring.quarantine(get_settings()).records(run_id))
    published = published_items(run_id)
    event(  # `--hypothesis-show-statistics` shows that the interesting cases are reached
        "whole page: " + ("failed" if error else "accepted")
        if body is not None
        else f"pages: {-(-len(items) // 10)}, quarantined: {bool(quarantined)}, err: {bool(error)}"
    )
    if body is None and error is not None:
        # the only way pages of the contract fail: the same row served on two pages in a row
        # (or a whole page served twice), which the client refuses rather than count twice
        assert "pages overlap" in error or "repeats itself" in error, error
        assert "/users?page=" in error
        encoded = [json.dumps(item, sort_keys=True) for item in items]
        assert len(set(encoded)) < len(encoded)
        assert manifest["ingest_status"] == "failed"
    elif body is None:  # pages of the contract: every item is published or quarantined, once
        assert result is not None
        counts = result.resources["users"]
        assert counts.fetched == len(items)
        assert counts.published + counts.quarantined + counts.unchanged == len(items)
        assert len(quarantined) == counts.quarantined
        assert sorted(positions) == [(i // 10 + 1, i % 10) for i in range(len(items))]
        assert manifest["ingest_status"] == "published"
        # ... and what reached the stream is exactly every item not quarantined, once each
        kept = {q.origin for q in quarantined}
        assert sorted(published) == sorted(
            json.dumps(validate_item("users", item), sort_keys=True)
            for i, item in enumerate(items)
            if f"ingest-p{i // 10 + 1}-i{i % 10}" not in kept
        )
    elif error is not None:  # a whole page that is no page: the resource fails, by URL
        assert "/users?page=" in error
        assert "/users?page=1&size=10" in error or "/users?page=2&size=10" in error
        assert manifest["ingest_status"] == "failed"
    else:  # a body accepted as the whole resource holds exactly what it announces
        page = json.loads(body)
        assert result is not None
        counts = result.resources["users"]
        assert page["total"] == counts.fetched == len(page["items"])
        assert page["pages"] == (1 if page["items"] else page["pages"])
        assert counts.published + counts.quarantined == counts.fetched
        assert len(published) == counts.published
        assert manifest["ingest_status"] == "published"


def published_items(run_id: str) -> list[str]:
    """The items the run put on the stream (every shard, from the start), as sorted JSON."""
    kinesis = aws.client("kinesis")
    stream = get_settings().stream_name
    found: list[str] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            answer = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            for record in answer["Records"]:
                envelope = decode_envelope(record["Data"])
                if envelope.run_id == run_id:
                    found.append(json.dumps(envelope.item, sort_keys=True))
            iterator = answer.get("NextShardIterator") if answer["Records"] else None
    return found


# --- the fake API's source faults -----------------------------------------------------------


def test_source_faults_are_named_parsed_and_documented(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from localcloud import fakeapi
    from localcloud.fakeapi.source_faults import SOURCE_FAULT_NAMES

    faults = SourceFaults.parse(["slow-drip", "huge-page@tracks"])
    assert faults.faults == {"slow-drip": "users", "huge-page": "tracks"}
    with pytest.raises(ValueError, match="unknown source faults"):
        SourceFaults.parse(["no-such-fault"])
    monkeypatch.setenv("COLUMNS", "2000")  # argparse would wrap `nested-json` at its hyphen
    with pytest.raises(SystemExit):
        fakeapi.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in SOURCE_FAULT_NAMES:
        assert f"{name}:" in help_text
    with pytest.raises(SystemExit):
        fakeapi.main(["--source-fault", "no-such-fault"])
    assert "unknown source faults" in capsys.readouterr().err
