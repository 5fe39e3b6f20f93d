"""The stream consumer against moto: newest wins, partial failures, poison quarantined.

Only a record whose sink failed may appear in `batchItemFailures` (Lambda re-delivers it and
what follows); a record that can never be stored is quarantined with its reason, counted in
the run manifest, and never reported failed, or it would block its shard forever.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from chalicelib import handlers, wiring
from chalicelib.aws import clients as aws
from chalicelib.deadletter.quarantine import UNATTRIBUTED_RUN, Quarantine, QuarantinedRecord
from chalicelib.load.consumer import LoadDependencies, PoisonRecord, decode_record, process_batch
from chalicelib.load.sinks import Sink
from chalicelib.load.sinks.dynamodb import DynamoDBSink
from chalicelib.model.contract import partition_key
from chalicelib.model.envelope import Envelope, encode_envelope
from chalicelib.runs.manifest import RunManifests
from chalicelib.settings import Settings
from localcloud.triggers.lambda_runtime import LambdaContext
from tests.helpers.factories import (
    envelope_record,
    kinesis_record,
    listen_history,
    next_id,
    provision_stores,
    track,
    unique_name,
    user,
)

V1, V2, V3 = "2025-01-01T00:00:00", "2025-02-01T00:00:00.25", "2025-03-01T00:00:00"


@pytest.fixture
def stores(aws_env: str) -> Settings:
    return provision_stores(unique_name("load"))


@dataclass
class FlakySink:
    """Wraps a sink; fails every write of the entities in `failing` (a sink outage)."""

    inner: Any
    failing: set[str] = field(default_factory=set)
    name: str = "flaky"
    calls: list[tuple[str, int]] = field(default_factory=list)

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> Sequence[Envelope]:
        self.calls.append((entity, len(envelopes)))
        if entity in self.failing:
            raise ConnectionError(f"{self.name} is down for {entity}")
        return list(self.inner.write(entity, envelopes)) if self.inner else list(envelopes)

    def count(self, entity: str) -> int:
        return int(self.inner.count(entity)) if self.inner else 0


def deps_for(settings: Settings, *sinks: Sink, bucket: str | None = None) -> LoadDependencies:
    return LoadDependencies(
        sinks=list(sinks) or [DynamoDBSink(settings)],
        quarantine=Quarantine(aws.client("s3"), bucket or settings.quarantine_bucket),
        manifests=RunManifests(aws.client("dynamodb"), settings.table_name("runs")),
    )


def manifest(settings: Settings, run_id: str) -> dict[str, Any]:
    return RunManifests(aws.client("dynamodb"), settings.table_name("runs")).get(run_id) or {}


def failures(outcome: Any) -> list[str]:
    return [f["itemIdentifier"] for f in outcome.response()["batchItemFailures"]]


def sequence(record: dict[str, Any]) -> str:
    return str(record["kinesis"]["sequenceNumber"])


def origin(record: dict[str, Any]) -> str:
    """The quarantine origin of a load-side record: its shard and sequence number."""
    shard, sequence_number = record["eventID"].split(":")
    return f"load-{shard}-{sequence_number}"


def stored_user(settings: Settings, key: int) -> dict[str, Any] | None:
    rows = {row["id"]: row for row in DynamoDBSink(settings).rows("users")}
    return rows.get(key)


# --- happy path and newest wins -------------------------------------------------------------


def test_batch_is_written_and_counted_per_run(stores: Settings) -> None:
    run = unique_name("run")
    records = [
        envelope_record("users", user(id=next_id()), run_id=run),
        envelope_record("tracks", track(id=next_id()), run_id=run),
        envelope_record("listen_history", listen_history(user_id=next_id()), run_id=run),
        envelope_record("users", user(id=next_id()), run_id=run),
    ]
    outcome = process_batch(records, deps_for(stores))

    assert outcome.response() == {"batchItemFailures": []}
    counts = manifest(stores, run)
    assert counts["written.dynamodb.users"] == 2
    assert counts["written.dynamodb.tracks"] == 1
    assert counts["written.dynamodb.listen_history"] == 1
    assert not any(name.startswith("quarantined") for name in counts)


def test_counts_go_to_the_run_each_record_came_from(stores: Settings) -> None:
    run_a, run_b = unique_name("run"), unique_name("run")
    records = [
        envelope_record("users", user(id=next_id()), run_id=run_a),
        envelope_record("users", user(id=next_id()), run_id=run_b),
        envelope_record("users", user(id=next_id()), run_id=run_b),
    ]
    process_batch(records, deps_for(stores))
    assert manifest(stores, run_a)["written.dynamodb.users"] == 1
    assert manifest(stores, run_b)["written.dynamodb.users"] == 2


def test_out_of_order_versions_in_one_batch_and_across_batches(stores: Settings) -> None:
    key = next_id()
    deps = deps_for(stores)
    first = [
        envelope_record("users", user(id=key, updated_at=V2, first_name="v2")),
        envelope_record("users", user(id=key, updated_at=V1, first_name="v1")),
    ]
    process_batch(first, deps)
    assert stored_user(stores, key)["first_name"] == "v2"  # type: ignore[index]

    process_batch([envelope_record("users", user(id=key, updated_at=V1, first_name="v1"))], deps)
    assert stored_user(stores, key)["first_name"] == "v2"  # type: ignore[index]

    run = unique_name("run")
    later = [
        envelope_record("users", user(id=key, updated_at=V1, first_name="v1"), run_id=run),
        envelope_record("users", user(id=key, updated_at=V3, first_name="v3"), run_id=run),
        envelope_record("users", user(id=key, updated_at=V2, first_name="v2"), run_id=run),
    ]
    process_batch(later, deps)
    assert stored_user(stores, key)["first_name"] == "v3"  # type: ignore[index]
    assert manifest(stores, run)["written.dynamodb.users"] == 1


def test_redelivery_changes_nothing_and_counts_nothing(stores: Settings) -> None:
    run = unique_name("run")
    records = [envelope_record("tracks", track(id=next_id()), run_id=run) for _ in range(5)]
    deps = deps_for(stores)
    process_batch(records, deps)
    process_batch(records, deps)
    process_batch(records[2:], deps)
    assert manifest(stores, run)["written.dynamodb.tracks"] == 5


def test_the_handler_entry_point(stores: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_TABLE_PREFIX", stores.table_prefix)
    monkeypatch.setenv("PIPELINE_QUARANTINE_BUCKET", stores.quarantine_bucket)
    monkeypatch.setenv("PIPELINE_SINKS", "dynamodb")
    wiring.reset()
    key = next_id()
    poison = kinesis_record(b"garbage", "users:1")
    event = {"Records": [envelope_record("users", user(id=key)), poison]}

    response = handlers.handle_kinesis(event, LambdaContext("load"))

    assert response == {"batchItemFailures": []}
    assert stored_user(stores, key) is not None
    assert wiring.quarantine(stores).count_by_entity(UNATTRIBUTED_RUN) == {"users": 1}


# --- partial failures -----------------------------------------------------------------------


def test_only_records_whose_sink_failed_are_reported(stores: Settings) -> None:
    flaky = FlakySink(DynamoDBSink(stores), failing={"tracks"})
    run = unique_name("run")
    records = [
        envelope_record("users", user(id=next_id()), run_id=run),
        envelope_record("tracks", track(id=next_id()), run_id=run),
        envelope_record("listen_history", listen_history(user_id=next_id()), run_id=run),
        envelope_record("tracks", track(id=next_id()), run_id=run),
        envelope_record("users", user(id=next_id()), run_id=run),
    ]
    outcome = process_batch(records, deps_for(stores, flaky))

    assert failures(outcome) == [sequence(records[1]), sequence(records[3])]
    counts = manifest(stores, run)
    assert counts["written.flaky.users"] == 2
    assert counts["written.flaky.listen_history"] == 1
    assert "written.flaky.tracks" not in counts


def test_a_second_sink_failing_reports_the_records_and_redelivery_completes(
    stores: Settings,
) -> None:
    dynamodb = DynamoDBSink(stores)
    other = FlakySink(None, failing={"users"}, name="other")
    run = unique_name("run")
    key = next_id()
    records = [envelope_record("users", user(id=key), run_id=run)]
    deps = deps_for(stores, dynamodb, other)

    assert failures(process_batch(records, deps)) == [sequence(records[0])]
    assert stored_user(stores, key) is not None  # the healthy sink wrote it

    other.failing.clear()
    assert failures(process_batch(records, deps)) == []  # re-delivery: other sink catches up
    counts = manifest(stores, run)
    assert counts["written.dynamodb.users"] == 1  # and dynamodb did not write it twice
    assert counts["written.other.users"] == 1


# --- poison ---------------------------------------------------------------------------------


def quarantined(settings: Settings, run_id: str | None = None) -> list[QuarantinedRecord]:
    return list(Quarantine(aws.client("s3"), settings.quarantine_bucket).records(run_id))


def envelope_bytes(entity: str, item: Any, run_id: str) -> bytes:
    return encode_envelope(entity=entity, run_id=run_id, fetched_at="t", item=item)


def poison_records(run: str) -> list[tuple[dict[str, Any], str, str, str]]:
    """(record, expected entity, expected run id, a piece of the expected reason)."""
    good = user(id=next_id())
    other = user(id=next_id())
    return [
        (kinesis_record("%%% not base64 %%%", "users:1"), "users", UNATTRIBUTED_RUN, "not a"),
        (kinesis_record(b"\x00\xffnot json", "tracks:2"), "tracks", UNATTRIBUTED_RUN, "not a"),
        (kinesis_record(b'{"hello": "world"}', "nonsense"), "unknown", UNATTRIBUTED_RUN, "entity"),
        (
            kinesis_record(
                orjson.dumps({"schema_version": 2, "entity": "users", "run_id": run,
                              "fetched_at": "t", "item": good}),
                partition_key("users", good),
            ),
            "users", run, "schema_version",
        ),
        (
            kinesis_record(
                envelope_bytes("albums", good, run), "albums:1"
            ),
            "unknown", run, "entity",
        ),
        (
            kinesis_record(
                envelope_bytes("tracks", track(duration="3 minutes"), run), "tracks:2"
            ),
            "tracks", run, "duration",
        ),
        (
            kinesis_record(
                envelope_bytes("users", {**good, "first_name": "a\x00b"}, run),
                partition_key("users", good),
            ),
            "users", run, "NUL",
        ),
        (
            kinesis_record(
                envelope_bytes("listen_history", {"user_id": 1, "items": []}, run),
                "listen_history:1",
            ),
            "listen_history", run, "created_at",
        ),
        (
            kinesis_record(envelope_bytes("users", good, run), partition_key("users", other)),
            "users", run, "partition key",
        ),
    ]  # fmt: skip


def test_poison_is_quarantined_with_its_reason_and_never_reported(stores: Settings) -> None:
    run = unique_name("run")
    poison = poison_records(run)
    keys = [next_id(), next_id()]
    good = [envelope_record("users", user(id=k), run_id=run) for k in keys]
    records = [good[0], *(p[0] for p in poison), good[1]]

    outcome = process_batch(records, deps_for(stores))

    assert failures(outcome) == []
    assert all(stored_user(stores, k) is not None for k in keys)
    by_origin = {q.origin: q for q in quarantined(stores)}
    assert len(by_origin) == len(poison)
    for record, entity, run_id, reason in poison:
        kept = by_origin[origin(record)]
        assert (kept.entity, kept.run_id) == (entity, run_id)
        assert reason in kept.reason, kept.reason
        raw = record["kinesis"]["data"]
        if raw.startswith("%"):
            assert kept.payload == raw.encode()
        else:
            assert kept.payload == base64.b64decode(raw)
    counts = manifest(stores, run)
    assert counts["written.dynamodb.users"] == 2
    attributed = [p for p in poison if p[2] == run]
    for entity in {p[1] for p in attributed}:
        expected = sum(1 for p in attributed if p[1] == entity)
        assert counts[f"quarantined.load.{entity}"] == expected
    unattributed = manifest(stores, UNATTRIBUTED_RUN)
    assert unattributed["quarantined.load.users"] >= 1


def test_quarantined_object_is_readable_json_with_reason(stores: Settings) -> None:
    run = unique_name("run")
    item = track(id=next_id(), duration="bad")
    record = kinesis_record(envelope_bytes("tracks", item, run), partition_key("tracks", item))
    process_batch([record], deps_for(stores))

    key = f"{run}/tracks/{origin(record)}.json"
    body = aws.client("s3").get_object(Bucket=stores.quarantine_bucket, Key=key)["Body"].read()
    document = orjson.loads(body)
    assert document["reason"].startswith("breaks the contract: duration")
    assert document["payload"]["item"] == item
    assert base64.b64decode(document["payload_base64"]) == record_data(record)


def record_data(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record["kinesis"]["data"])


def test_redelivered_poison_is_quarantined_and_counted_once(stores: Settings) -> None:
    """A batch re-delivered (another record failed, or the handler crashed) carries its
    poison again: the S3 object is the same, and the manifest must not count it twice."""
    run = unique_name("run")
    flaky = FlakySink(DynamoDBSink(stores), failing={"users"})
    bad = track(id=next_id(), duration="x")
    records = [
        envelope_record("users", user(id=next_id()), run_id=run),
        kinesis_record(envelope_bytes("tracks", bad, run), partition_key("tracks", bad)),
    ]
    deps = deps_for(stores, flaky)
    assert failures(process_batch(records, deps)) == [sequence(records[0])]
    flaky.failing.clear()
    assert failures(process_batch(records, deps)) == []

    assert len(quarantined(stores, run)) == 1
    assert manifest(stores, run)["quarantined.load.tracks"] == 1


def test_poison_from_two_shards_with_the_same_sequence_number_is_kept_twice(
    stores: Settings,
) -> None:
    run = unique_name("run")
    bad = user(id=next_id(), gender=7)
    data = envelope_bytes("users", bad, run)
    records = [
        kinesis_record(data, "users:1", sequence="6", shard_id="shardId-000000000000"),
        kinesis_record(data, "users:1", sequence="6", shard_id="shardId-000000000001"),
    ]
    process_batch(records[:1], deps_for(stores))
    process_batch(records[1:], deps_for(stores))

    assert sorted(q.origin for q in quarantined(stores, run)) == [
        "load-shardId-000000000000-6",
        "load-shardId-000000000001-6",
    ]
    assert manifest(stores, run)["quarantined.load.users"] == 2


def test_quarantine_write_failure_is_reported_so_it_is_retried(stores: Settings) -> None:
    run = unique_name("run")
    bad = user(id=next_id(), email=None)
    poison = kinesis_record(envelope_bytes("users", bad, run), "users:1")
    key = next_id()
    good = envelope_record("users", user(id=key), run_id=run)
    deps = deps_for(stores, bucket=unique_name("missing-bucket"))

    outcome = process_batch([poison, good], deps)

    assert failures(outcome) == [sequence(poison)]
    assert stored_user(stores, key) is not None
    assert "quarantined.load.users" not in manifest(stores, run)


def test_record_dynamodb_can_never_store_is_quarantined_not_retried(stores: Settings) -> None:
    """Text may be very long: a row over DynamoDB's 400 KB item limit fits a Kinesis record
    (1 MiB) but no table. Retrying it would block its shard forever."""
    run = unique_name("run")
    big = track(id=next_id(), name="n" * 300_000, album="a" * 150_000)
    fits = track(id=next_id(), name="n" * 390_000)
    small = track(id=next_id())
    records = [envelope_record("tracks", item, run_id=run) for item in (small, big, fits)]

    outcome = process_batch(records, deps_for(stores))

    assert failures(outcome) == []
    rows = {row["id"]: row for row in DynamoDBSink(stores).rows("tracks")}
    assert rows[small["id"]] == small
    assert rows[fits["id"]] == fits
    assert big["id"] not in rows
    (kept,) = quarantined(stores, run)
    assert kept.origin == origin(records[1])
    assert "dynamodb" in kept.reason
    assert "400" in kept.reason
    counts = manifest(stores, run)
    assert counts["quarantined.load.tracks"] == 1
    assert counts["written.dynamodb.tracks"] == 2


def test_decode_record_returns_the_validated_envelope() -> None:
    item = {**user(id=7), "ignored": True}
    record = kinesis_record(envelope_bytes("users", item, "r"), "users:7")
    envelope = decode_record(record)
    assert envelope.item == user(id=7)
    assert (envelope.entity, envelope.run_id) == ("users", "r")


def test_item_of_another_entity_shape_is_poison() -> None:
    record = kinesis_record(envelope_bytes("users", track(id=3), "r"), "users:3")
    with pytest.raises(PoisonRecord, match="first_name"):
        decode_record(record)
