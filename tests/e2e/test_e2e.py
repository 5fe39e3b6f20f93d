"""End to end through the embedded local cloud: what the API served is what the store holds.

Every run starts its own local cloud (moto server, fake or contract-variant API) under
`tmp_path`, fires the schedule, drives the Kinesis trigger until the stream is drained and
compares the store, field by field, with what the API served. Record counts stay small so the
suite stays fast; the behaviour does not depend on the count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from chalicelib import wiring
from chalicelib.model.contract import ENTITIES, entity_key, validate_item
from localcloud import cli
from localcloud.emulators.moto_process import free_port
from localcloud.fakeapi import FakeApiServer, FaultInjector, iter_items
from localcloud.run_report import RunReport
from localcloud.stack import LocalCloud
from tests.helpers.contract_server import TOO_MANY_REQUESTS, UNAVAILABLE, ContractServer, odd_rows

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ENTITY_KEYS = {
    "fetched",
    "published",
    "unchanged",
    "quarantined",
    "work_items",
    "written",
    "stored",
    "superseded",
}
SINKS = ("dynamodb", "postgres")
"""Both sinks are on by default (`PIPELINE_SINKS`): every check holds for each."""


def by_key(entity: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: entity_key(entity, item))


def assert_same_rows(entity: str, stored: list[dict[str, Any]], served: list[Any]) -> None:
    """Field by field, types included (1 == 1.0 in Python, so compare the types too)."""
    expected = by_key(entity, [validate_item(entity, item) for item in served])
    assert len(stored) == len(expected), entity
    for row, item in zip(stored, expected, strict=True):
        assert row == item
        assert {k: type(v) for k, v in row.items()} == {k: type(v) for k, v in item.items()}


def assert_balanced(report: RunReport, expected: dict[str, tuple[int, int]]) -> None:
    """`expected[entity] = (fetched, quarantined)`; the rest is stored, nothing failed."""
    assert report.status == "succeeded", report.errors
    assert report.errors == []
    for entity, (fetched, quarantined) in expected.items():
        counts = report.entities[entity]
        assert counts["fetched"] == fetched, entity
        assert counts["quarantined"] == quarantined, entity
        assert counts["stored"] == dict.fromkeys(SINKS, fetched - quarantined), entity
        assert counts["written"] == dict.fromkeys(SINKS, fetched - quarantined), entity


# --- the CLI contract -----------------------------------------------------------------------


def test_cli_json_summary_and_dump(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    records, seed = 300, 4
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(name, None)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "localcloud",
            "run",
            "--json",
            "--records",
            str(records),
            "--seed",
            str(seed),
            "--dump",
            str(dump),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    summary = json.loads(completed.stdout)  # stdout is the JSON summary and nothing else
    assert set(summary) == {
        "status",
        "run_id",
        "entities",
        "timings",
        "event",
        "metrics",
        "alarms",
        "report",
        "reconcile",
        "schema_drift",
        "aws_calls",
        "verdict_trigger",
    }
    assert summary["schema_drift"] == {}
    assert summary["event"]["detail-type"] == "DatasetUpdated"
    # the verdict is the reconcile function's: its answer names the run and the event it sent
    assert summary["reconcile"]["runs"] == {summary["run_id"]: "succeeded"}
    assert summary["reconcile"]["events"] == {summary["run_id"]: summary["event"]["id"]}
    assert summary["status"] == "succeeded"
    assert isinstance(summary["run_id"], str)
    assert summary["run_id"]
    assert list(summary["entities"]) == list(ENTITIES)
    for counts in summary["entities"].values():
        assert set(counts) == ENTITY_KEYS
        assert counts == {
            "fetched": records,
            "published": records,
            "unchanged": 0,
            "quarantined": 0,
            "work_items": 0,
            "written": dict.fromkeys(SINKS, records),
            "stored": dict.fromkeys(SINKS, records),
            "superseded": 0,
        }
    assert set(summary["timings"]) == {"total_s", "pipeline_s", "verdict_s", "reconcile_s"}
    assert all(isinstance(value, float) for value in summary["timings"].values())
    assert 0 < summary["timings"]["pipeline_s"] <= summary["timings"]["total_s"]
    assert 0 < summary["timings"]["reconcile_s"] < summary["timings"]["verdict_s"]
    # the pipeline asked for its verdict once loaded; the schedule was not needed
    assert summary["verdict_trigger"] == "request"
    assert set(summary["aws_calls"]) == {"ingest", "ingest_worker", "load", "reconcile"}
    assert all(summary["aws_calls"][f] > 0 for f in ("ingest", "load", "reconcile"))

    for sink in SINKS:
        assert sorted(p.name for p in (dump / sink).iterdir()) == sorted(
            f"{entity}.jsonl" for entity in ENTITIES
        )
        for entity in ENTITIES:
            lines = (dump / sink / f"{entity}.jsonl").read_bytes().splitlines()
            stored = [orjson.loads(line) for line in lines]
            served = list(iter_items(entity, records, seed))
            assert_same_rows(entity, by_key(entity, stored), served)


# --- the built-in fake API ------------------------------------------------------------------


def test_store_holds_exactly_what_the_fake_api_served(tmp_path: Path) -> None:
    records, seed = 500, 7
    with LocalCloud(tmp_path / "state", records=records, seed=seed) as cloud:
        report = cloud.run()
        stored = {
            (sink, entity): cloud.stored_items(sink, entity)
            for sink in SINKS
            for entity in ENTITIES
        }
        manifest = wiring.manifests(cloud.settings).get(report.run_id) or {}

    assert_balanced(report, dict.fromkeys(ENTITIES, (records, 0)))
    for entity in ENTITIES:
        assert report.entities[entity]["published"] == records
        for sink in SINKS:
            assert_same_rows(
                entity, stored[(sink, entity)], list(iter_items(entity, records, seed))
            )
        assert manifest[f"written.dynamodb.{entity}"] == records
        assert manifest[f"pages.{entity}"] == 5
    assert manifest["ingest_status"] == "published"
    assert all(shard.stuck_at is None for shard in report.shards.values())


def test_poison_served_is_quarantined_and_the_run_still_succeeds(tmp_path: Path) -> None:
    records = 400
    faults = FaultInjector({"poison": 0.04}, seed=3)
    with (
        FakeApiServer(records=records, seed=2, faults=faults) as api,
        LocalCloud(tmp_path / "state", api_url=api.url) as cloud,
    ):
        report = cloud.run()
        stored = {
            (sink, entity): cloud.stored_items(sink, entity)
            for sink in SINKS
            for entity in ENTITIES
        }
        kept = list(wiring.quarantine(cloud.settings).records(report.run_id))

    poisoned = {
        entity: [i for i in range(records) if faults.is_poisoned(entity, i)] for entity in ENTITIES
    }
    assert all(poisoned.values())  # every resource got some poison
    assert_balanced(report, {e: (records, len(poisoned[e])) for e in ENTITIES})
    for entity in ENTITIES:  # poison never reaches the stream
        assert report.entities[entity]["published"] == records - len(poisoned[entity])
    for entity in ENTITIES:
        clean = [
            item
            for index, item in enumerate(iter_items(entity, records, 2))
            if index not in poisoned[entity]
        ]
        for sink in SINKS:
            assert_same_rows(entity, stored[(sink, entity)], clean)
    assert len(kept) == sum(len(p) for p in poisoned.values())
    assert all(q.reason.startswith("breaks the contract: ") for q in kept)
    assert all(q.origin.startswith("ingest-p") for q in kept)


# --- data lost: the run fails ---------------------------------------------------------------


def test_unreachable_api_fails_the_run_with_a_nonzero_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_MAX_RETRIES", "1")
    monkeypatch.setenv("PIPELINE_BACKOFF_FACTOR_S", "0")
    closed = f"http://127.0.0.1:{free_port()}"

    code = cli.main(["run", "--json", "--api-url", closed, "--state-dir", str(tmp_path / "s")])

    summary = json.loads(capsys.readouterr().out)
    assert code != 0
    assert summary["status"] == "failed"
    assert any(closed in error and "ingest" in error for error in summary["errors"])
    for counts in summary["entities"].values():
        assert counts["fetched"] == 0
        assert counts["stored"] == dict.fromkeys(SINKS, 0)


def test_a_page_that_never_answers_fails_the_run(tmp_path: Path) -> None:
    rows = odd_rows(seed=5)
    # /tracks page 3 answers 503 every time: pages 1-2 are stored, and still the run failed.
    script = {("tracks", 3): [UNAVAILABLE] * 50}
    env = {"PIPELINE_MAX_RETRIES": "2", "PIPELINE_BACKOFF_FACTOR_S": "0"}
    with (
        ContractServer(rows, script) as api,
        LocalCloud(tmp_path / "state", api_url=api.url, extra_env=env) as cloud,
    ):
        report = cloud.run()

    assert report.status == "failed"
    assert any("tracks" in error and "503" in error for error in report.errors)
    assert report.entities["tracks"]["fetched"] == 200
    users_stored = report.entities["users"]["stored"]
    assert users_stored == dict.fromkeys(SINKS, 1001)  # the others completed
    assert report.entities["listen_history"]["stored"] == dict.fromkeys(SINKS, 1003)


# --- other servers of the same contract -----------------------------------------------------


def test_contract_variant_server_with_every_quirk(tmp_path: Path) -> None:
    """Odd totals (1001/1001/1003 rows, size 100), hostile strings, timestamps without a
    fraction, several histories per user, shared user/track ids, an unknown field, transient
    429 (Retry-After: 0) and 503 answers, and three items that no store can hold."""
    rows = odd_rows(seed=1)
    lone_surrogate = {**rows["users"][10], "id": 100_001, "last_name": "broken \ud800 text"}
    too_big_for_dynamodb = {**rows["tracks"][10], "id": 100_002, "name": "n" * 450_000}
    too_big_for_kinesis = {**rows["tracks"][11], "id": 100_003, "album": "a" * 1_100_000}
    rows["users"].insert(500, lone_surrogate)
    rows["tracks"].insert(3, too_big_for_dynamodb)
    rows["tracks"].insert(950, too_big_for_kinesis)
    script: dict[tuple[str, int], list[Any]] = {}
    for entity in ENTITIES:
        script[(entity, 1)] = [TOO_MANY_REQUESTS]
        script[(entity, 4)] = [UNAVAILABLE, TOO_MANY_REQUESTS]
        script[(entity, 11)] = [UNAVAILABLE]  # the short last page

    with (
        ContractServer(rows, script) as api,
        LocalCloud(tmp_path / "state", api_url=api.url) as cloud,
    ):
        report = cloud.run()
        stored = {
            (sink, entity): cloud.stored_items(sink, entity)
            for sink in SINKS
            for entity in ENTITIES
        }
        kept = {q.origin: q for q in wiring.quarantine(cloud.settings).records(report.run_id)}
        statuses = api.served_statuses()

    assert statuses[429] == 6
    assert statuses[503] == 6
    assert_balanced(report, {"users": (1002, 1), "tracks": (1003, 2), "listen_history": (1003, 0)})
    published = {entity: counts["published"] for entity, counts in report.entities.items()}
    # the DynamoDB-sized track is published and quarantined by the load; the others by ingest
    assert published == {"users": 1001, "tracks": 1002, "listen_history": 1003}
    unstorable = {100_001, 100_002, 100_003}
    for entity in ENTITIES:
        served = [item for item in rows[entity] if item.get("id") not in unstorable]
        for sink in SINKS:
            assert_same_rows(entity, stored[(sink, entity)], served)
    reasons = sorted(q.reason for q in kept.values())
    assert len(reasons) == 3
    assert any("RecordTooLarge" in reason for reason in reasons)
    assert any(  # the field is named
        reason.startswith("breaks the contract: last_name:") and "lone surrogate" in reason
        for reason in reasons
    )
    assert any("dynamodb sink cannot store it" in reason for reason in reasons)


def test_contract_variant_with_short_and_empty_resources(tmp_path: Path) -> None:
    """`total` and `pages` right, last page short (101 rows: 100 + 1), one resource with a
    single row, one empty (`total` 0, `pages` 0)."""
    rows = odd_rows(seed=9)
    rows = {
        "users": rows["users"][:101],
        "tracks": [],
        "listen_history": rows["listen_history"][:1],
    }
    script = {("users", 2): [UNAVAILABLE, TOO_MANY_REQUESTS]}

    with (
        ContractServer(rows, script) as api,
        LocalCloud(tmp_path / "state", api_url=api.url) as cloud,
    ):
        report = cloud.run()
        stored = {
            (sink, entity): cloud.stored_items(sink, entity)
            for sink in SINKS
            for entity in ENTITIES
        }
        requested = sorted({(entity, page) for entity, page, *_ in api.requests})

    assert_balanced(report, {"users": (101, 0), "tracks": (0, 0), "listen_history": (1, 0)})
    for entity in ENTITIES:
        for sink in SINKS:
            assert_same_rows(entity, stored[(sink, entity)], rows[entity])
    assert requested == [("listen_history", 1), ("tracks", 1), ("users", 1), ("users", 2)]
