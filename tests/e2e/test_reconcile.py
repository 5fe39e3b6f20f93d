"""Reconciliation by key: a run succeeds only when every fetched record is stored or
quarantined, and a short run names the records it lost.

The module shares one run; a test that deletes a row, ages it or marks the run reconciling
gets every DynamoDB table of the cloud back as the run left them (`settled`), so the tests
pass in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.load.sinks.dynamodb import ROW_MODELS, UserRow
from chalicelib.model.contract import entity_key
from chalicelib.reconcile.verdict import Reconciler
from localcloud.chaos import Chaos
from localcloud.stack import LocalCloud
from tests.helpers.dynamo_snapshot import restored_tables

pytestmark = pytest.mark.e2e

RECORDS = 60


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCloud, str]]:
    """One run with a few poisoned records (quarantined at ingest)."""
    chaos = Chaos.from_spec("poison=0.1", seed=4)
    with LocalCloud(
        tmp_path_factory.mktemp("reconcile"),
        records=RECORDS,
        seed=5,
        # 10 % poison on 60 records may pass the default quality gate: this module is about
        # balancing, the gate has its own tests (tests/e2e/test_content_faults.py)
        extra_env={"PIPELINE_PAGE_SIZE": "10", "PIPELINE_MAX_QUARANTINE_RATIO": "0.5"},
        chaos=chaos,
    ) as local:
        report = local.run()
        assert report.status == "succeeded", report.errors
        assert sum(e["quarantined"] for e in report.entities.values()) > 0
        yield local, report.run_id


@pytest.fixture(autouse=True)
def settled(cloud: tuple[LocalCloud, str]) -> Iterator[None]:
    """Whatever a test changes in the cloud's tables (rows, ledger, runs) is undone after it."""
    local, _ = cloud
    with restored_tables(aws.client("dynamodb"), local.settings.table_prefix):
        yield


def reconciler() -> Reconciler:
    return wiring.reconciler(wiring.get_settings())


def manifest(run_id: str) -> dict[str, Any]:
    found = wiring.manifests(wiring.get_settings()).get(run_id)
    assert found is not None
    return found


def a_stored_user() -> UserRow:
    return next(iter(UserRow.scan(limit=1)))


def test_a_complete_run_balances(cloud: tuple[LocalCloud, str]) -> None:
    _, run_id = cloud
    result = reconciler().reconcile(run_id, final=True)
    assert result.status == "succeeded"
    for entity, balance in result.entities.items():
        assert balance.fetched == RECORDS, entity
        assert balance.stored + balance.quarantined == balance.fetched
        assert balance.missing == 0
    assert manifest(run_id)["status"] == "succeeded"


def test_a_lost_record_fails_the_run_and_is_named(cloud: tuple[LocalCloud, str]) -> None:
    _, run_id = cloud
    row = a_stored_user()
    row.delete()
    try:
        result = reconciler().reconcile(run_id, final=True)
        assert result.status == "failed"
        assert result.entities["users"].missing == 1
        assert result.entities["users"].missing_records[0].startswith(f"users:{int(row.id)}@")
        assert "not in dynamodb" in result.entities["users"].missing_records[0]
        state = manifest(run_id)
        assert state["status"] == "failed"
        assert state["reconciled.missing.users"] == 1
        assert f"users:{int(row.id)}@" in state["missing_records.users"]
    finally:
        row.save()
    assert reconciler().reconcile(run_id, final=True).status == "succeeded"


def test_an_older_stored_version_is_short_a_newer_one_is_not(
    cloud: tuple[LocalCloud, str],
) -> None:
    _, run_id = cloud
    row = a_stored_user()
    served = row.updated_at
    try:
        row.updated_at = "2000-01-01T00:00:00"
        row.save()
        assert reconciler().reconcile(run_id, final=True).entities["users"].missing == 1
        row.updated_at = "2999-01-01T00:00:00"  # a later run stored a newer version
        row.save()
        assert reconciler().reconcile(run_id, final=True).status == "succeeded"
    finally:
        row.updated_at = served
        row.save()


def test_a_record_quarantined_at_ingest_must_stay_in_the_quarantine(
    cloud: tuple[LocalCloud, str],
) -> None:
    _, run_id = cloud
    quarantine = wiring.quarantine(wiring.get_settings())
    key = next(quarantine.keys(run_id))
    record = quarantine.get(key)
    quarantine.delete(record)
    try:
        result = reconciler().reconcile(run_id, final=True)
        balance = result.entities[record.entity]
        assert balance.missing == 1
        page, item = record.origin.removeprefix("ingest-p").split("-i")
        assert balance.missing_records == [f"{record.entity} page {page} item {item}"]
    finally:
        quarantine.put(record)


def test_the_schedule_waits_for_young_runs_and_fails_old_ones(
    cloud: tuple[LocalCloud, str],
) -> None:
    _, run_id = cloud
    row = a_stored_user()
    row.delete()
    aws.client("dynamodb").update_item(
        TableName=wiring.get_settings().table_name("runs"),
        Key={"run_id": {"S": run_id}},
        UpdateExpression="SET #s = :r",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":r": {"S": "reconciling"}},
    )
    try:
        young = reconciler().reconcile_pending(grace_s=3600)
        assert {r.run_id: r.status for r in young} == {run_id: "reconciling"}
        later = datetime.now(UTC) + timedelta(hours=2)
        old = reconciler().reconcile_pending(grace_s=3600, now=later)
        assert {r.run_id: r.status for r in old} == {run_id: "failed"}
        assert reconciler().reconcile_pending(grace_s=3600) == []  # settled runs are left alone
    finally:
        row.save()


def test_every_sink_model_has_a_ledger_lookup(cloud: tuple[LocalCloud, str]) -> None:
    """The reconciler asks each sink for versions by `entity_key`; every entity answers."""
    local, _ = cloud
    for sink in wiring.build_sinks(local.settings):
        for entity in ROW_MODELS:
            rows = local.stored_items(sink.name, entity)[:3]
            keys = [entity_key(entity, row) for row in rows]
            versions = sink.stored_versions(entity, keys)
            assert {key: versions[key] for key in keys} == {
                entity_key(entity, row): row["updated_at"] for row in rows
            }


def test_dump_writes_the_quarantine_with_payload_and_reason(
    cloud: tuple[LocalCloud, str], tmp_path: Path
) -> None:
    local, _ = cloud
    local.dump(tmp_path)
    lines = (tmp_path / "quarantine.jsonl").read_text().splitlines()
    assert lines
    assert all('"reason":"breaks the contract' in line for line in lines)


def test_one_broken_run_never_blocks_another(cloud: tuple[LocalCloud, str]) -> None:
    """A run whose ledger cannot be read (a DynamoDB error the sweep meets for that run only)
    is settled on its own: a transient error leaves it for the next sweep, any other declares
    it failed with the error; the healthy run next to it settles as usual."""
    _, run_id = cloud
    settings = wiring.get_settings()
    broken = "20000101T000000Z-0badc0de"
    manifests = wiring.manifests(settings)
    manifests.start(broken, "2000-01-01T00:00:00+00:00", ["users"])
    client = aws.client("dynamodb")
    runs = settings.table_name("runs")
    for each in (run_id, broken):
        client.update_item(
            TableName=runs,
            Key={"run_id": {"S": each}},
            UpdateExpression="SET #s = :r",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":r": {"S": "reconciling"}},
        )
    code = {"value": "ThrottlingException"}

    def refuse_the_broken_run(params: dict[str, Any], **_: Any) -> None:
        values = params.get("ExpressionAttributeValues", {})
        if values.get(":run") == {"S": broken}:
            raise ClientError({"Error": {"Code": code["value"], "Message": "injected"}}, "Query")

    client.meta.events.register("before-parameter-build.dynamodb.Query", refuse_the_broken_run)
    try:
        first = {r.run_id: r for r in reconciler().reconcile_pending(grace_s=10**9)}
        assert first[run_id].status == "succeeded"
        assert first[broken].status == "reconciling"  # transient: the next sweep tries again
        assert "ThrottlingException" in first[broken].reasons[0]
        assert manifest(broken)["status"] == "reconciling"
        code["value"] = "ValidationException"  # not transient: failed now, with the reason
        second = {r.run_id: r for r in reconciler().reconcile_pending(grace_s=10**9)}
        assert set(second) == {broken}
        assert second[broken].status == "failed"
        assert "ValidationException" in manifest(broken)["reconcile_reasons"]
    finally:
        client.meta.events.unregister(
            "before-parameter-build.dynamodb.Query", refuse_the_broken_run
        )
    assert reconciler().reconcile_pending(grace_s=10**9) == []


def test_a_balanced_run_counts_stored_superseded_and_quarantined(
    cloud: tuple[LocalCloud, str],
) -> None:
    _, run_id = cloud
    result = reconciler().reconcile(run_id, final=True)
    for balance in result.entities.values():
        assert balance.fetched == balance.stored + balance.superseded + balance.quarantined
    state = manifest(run_id)
    assert all(f"reconciled.superseded.{entity}" in state for entity in result.entities)
