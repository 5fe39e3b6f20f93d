"""The reconcile function's outcome of settled runs: run-outcome metrics, the last success kept
in the runs table, DatasetUpdated (chalicelib/runs/outcome.py), against moto."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.aws import clients as aws
from chalicelib.deadletter.quarantine import Quarantine
from chalicelib.observability.metrics import metrics
from chalicelib.reconcile.balance import EntityBalance, Reconciliation
from chalicelib.runs.manifest import RunManifests
from chalicelib.runs.outcome import LAST_SUCCESS_RUN_ID, RunOutcomes
from chalicelib.settings import get_settings
from localcloud.events import EventCapture
from localcloud.monitoring.emf_extraction import emf_metrics

T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The EMF documents the function writes (what Lambda sends to CloudWatch Logs)."""
    monkeypatch.setenv("PIPELINE_TABLE_PREFIX", "moovitamix-test")
    get_settings.cache_clear()
    documents: list[dict[str, Any]] = []
    metrics.clear_metrics()
    monkeypatch.setattr(metrics, "output", lambda line: documents.append(json.loads(line)))
    yield documents
    metrics.clear_metrics()
    get_settings.cache_clear()


@pytest.fixture
def outcomes(aws_env: str) -> tuple[RunOutcomes, EventCapture]:
    suffix = uuid.uuid4().hex[:8]
    dynamodb = aws.client("dynamodb")
    table = f"outcome-runs-{suffix}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "run_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "run_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    bucket = f"outcome-quarantine-{suffix}"
    aws.client("s3").create_bucket(Bucket=bucket)
    for key in ("r0/users/ingest-p1-i3.json", "r0/tracks/load-9.json"):
        aws.client("s3").put_object(Bucket=bucket, Key=key, Body=b"{}")
    bus = f"outcome-bus-{suffix}"
    aws.client("events").create_event_bus(Name=bus)
    capture = EventCapture(f"outcome-events-{suffix}", bus).start()
    recorder = RunOutcomes(
        manifests=RunManifests(dynamodb, table),
        quarantine=Quarantine(aws.client("s3"), bucket),
        events=aws.client("events"),
        bus_name=bus,
    )
    return recorder, capture


def verdict(run_id: str, status: str, missing: int = 0) -> Reconciliation:
    return Reconciliation(
        run_id,
        status,
        entities={
            "users": EntityBalance(fetched=10, stored=10 - missing, missing=missing),
            "tracks": EntityBalance(fetched=5, stored=5),
        },
    )


def values(documents: list[dict[str, Any]]) -> dict[tuple[str, str | None], list[float]]:
    """{(metric, entity or None): values} over the documents."""
    found: dict[tuple[str, str | None], list[float]] = {}
    for document in documents:
        for _namespace, name, dimensions, _unit, _moment, numbers in emf_metrics(document):
            if set(dimensions) <= {"Pipeline", "Entity"}:
                key = (name, dimensions.get("Entity"))
                if "Entity" in dimensions or name != "ReconciliationDifference":
                    found.setdefault(key, []).extend(numbers)
    return found


def test_a_success_then_a_failure_then_a_quiet_sweep(
    outcomes: tuple[RunOutcomes, EventCapture], emitted: list[dict[str, Any]]
) -> None:
    recorder, capture = outcomes
    assert recorder.last_success_at() is None

    recorder.manifests.add_counts(
        "r1", {"published.users": 10, "written.dynamodb.users": 7, "written.postgres.users": 7}
    )
    answer = recorder.record([verdict("r1", "succeeded")], now=T0)
    metrics.flush_metrics()
    assert values(emitted) == {
        ("RunSucceeded", None): [1.0],
        ("RunFailed", None): [0.0],
        ("Freshness", None): [0.0],
        ("QuarantineBacklog", None): [2.0],
        ("ReconciliationDifference", "users"): [0.0],
        ("ReconciliationDifference", "tracks"): [0.0],
    }
    assert recorder.last_success_at() == T0
    assert recorder.manifests.get(LAST_SUCCESS_RUN_ID) == {
        "run_id": LAST_SUCCESS_RUN_ID,
        "status": "succeeded",
        "run": "r1",
        "succeeded_at": T0.isoformat(),
    }
    event = capture.receive(timeout_s=10)
    assert event is not None
    assert event["id"] == answer["events"]["r1"]
    assert event["detail"]["run_id"] == "r1"
    assert event["detail"]["entities"]["users"] == {
        "fetched": 10,
        "stored": 10,
        "quarantined": 0,
        "missing": 0,
        "missing_records": [],
        "superseded": 0,
        "published": 10,
        "unchanged": 0,
        "written": {"dynamodb": 7, "postgres": 7},
    }

    emitted.clear()
    later = T0 + timedelta(hours=3)
    answer = recorder.record([verdict("r2", "failed", missing=4)], now=later)
    metrics.flush_metrics()
    assert values(emitted) == {
        ("RunSucceeded", None): [0.0],
        ("RunFailed", None): [1.0],
        ("Freshness", None): [3 * 3600.0],
        ("QuarantineBacklog", None): [2.0],
        ("ReconciliationDifference", "users"): [4.0],
        ("ReconciliationDifference", "tracks"): [0.0],
    }
    assert answer == {"last_success_at": T0.isoformat(), "events": {}}
    assert recorder.last_success_at() == T0  # a failure keeps the last success
    assert capture.receive(timeout_s=2) is None

    emitted.clear()
    quiet = T0 + timedelta(hours=30)
    # a run still reconciling (not final) has no outcome yet; nothing settled: only the age
    recorder.record([verdict("r3", "reconciling", missing=1)], now=quiet)
    metrics.flush_metrics()
    assert values(emitted) == {("Freshness", None): [30 * 3600.0]}


def test_before_any_success_the_age_is_not_invented(
    outcomes: tuple[RunOutcomes, EventCapture], emitted: list[dict[str, Any]]
) -> None:
    recorder, _ = outcomes
    recorder.record([], now=T0)
    recorder.record([verdict("r1", "failed", missing=1)], now=T0)
    metrics.flush_metrics()
    found = values(emitted)
    assert ("Freshness", None) not in found
    assert found[("RunFailed", None)] == [1.0]
