"""Change detection: what is skipped, that nothing is skipped that a sink lacks, and that a
look-up that fails costs a full publish, never a record (the ingest fails open).

Against the session's moto server; the rerun through the whole pipeline is in
tests/e2e/test_change_detection_rerun.py.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.deadletter.quarantine import Quarantine
from chalicelib.ingest.changes import ChangeDetector
from chalicelib.ingest.run import run_ingest
from chalicelib.load.consumer import LoadDependencies, process_batch
from chalicelib.load.sinks.dynamodb import DynamoDBSink
from chalicelib.model.contract import partition_key, validate_item
from chalicelib.model.envelope import Envelope, decode_envelope, encode_envelope
from chalicelib.model.fingerprint import FINGERPRINT_ATTRIBUTE
from chalicelib.runs.manifest import RunManifests
from chalicelib.settings import Settings
from localcloud.fakeapi import FakeApiServer, iter_items
from tests.helpers.factories import use_fresh_stage


def _items(entity: str, count: int, seed: int = 7) -> list[dict[str, Any]]:
    return [validate_item(entity, item) for item in iter_items(entity, count, seed)]


def _envelope(entity: str, item: dict[str, Any], run_id: str = "run-1") -> Envelope:
    return Envelope(entity=entity, run_id=run_id, fetched_at="2026-01-01T00:00:00", item=item)


def _record(envelope: Envelope, sequence: int) -> dict[str, Any]:
    data = encode_envelope(
        entity=envelope.entity,
        run_id=envelope.run_id,
        fetched_at=envelope.fetched_at,
        item=envelope.item,
    )
    return {
        "kinesis": {
            "partitionKey": partition_key(envelope.entity, envelope.item),
            "sequenceNumber": str(sequence),
            "data": base64.b64encode(data).decode(),
        }
    }


@pytest.fixture
def stage(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Provisioned tables and bucket of a fresh prefix, DynamoDB the only sink."""
    return use_fresh_stage(monkeypatch, "changes", PIPELINE_SINKS="dynamodb")


def _detector(settings: Settings) -> ChangeDetector:
    detector = wiring.change_detector(settings)
    assert detector is not None
    return detector


class _Sink:
    """A sink before DynamoDB (like PostgreSQL) that stores in memory, or fails every write."""

    name = "memory"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.rows: dict[str, Envelope] = {}

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> Sequence[Envelope]:
        if self.fail:
            raise ConnectionError("sink down")
        for envelope in envelopes:
            self.rows[partition_key(entity, envelope.item)] = envelope
        return envelopes

    def count(self, entity: str) -> int:
        return len(self.rows)

    def stored_versions(self, entity: str, keys: Sequence[Any]) -> dict[Any, str]:
        return {}


def _load_deps(settings: Settings, first: _Sink) -> LoadDependencies:
    return LoadDependencies(
        sinks=[first, DynamoDBSink(settings)],
        quarantine=Quarantine(aws.client("s3"), settings.quarantine_bucket),
        manifests=RunManifests(aws.client("dynamodb"), settings.table_name("runs")),
    )


def _no_lookup(entity: str, keys: Sequence[Any]) -> dict[Any, bytes]:
    """Fingerprint tests never look anything up."""
    raise AssertionError("no look-up expected")


_VALUES = st.integers(min_value=0, max_value=2**63 - 1) | st.text(max_size=5)


@given(
    first=st.dictionaries(st.text(max_size=5), _VALUES, max_size=4),
    second=st.dictionaries(st.text(max_size=5), _VALUES, max_size=4),
)
def test_fingerprint_equal_exactly_when_content_equal(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    detector = ChangeDetector(_no_lookup, sinks=["dynamodb"])
    same = detector.fingerprint("users", first) == detector.fingerprint("users", second)
    assert same == (first == second)
    reordered = dict(reversed(list(first.items())))
    assert detector.fingerprint("users", reordered) == detector.fingerprint("users", first)


def test_fingerprint_changes_with_the_set_of_sinks_and_the_entity() -> None:
    item = _items("users", 1)[0]
    one = ChangeDetector(_no_lookup, ["dynamodb"])
    two = ChangeDetector(_no_lookup, ["postgres", "dynamodb"])
    same_two = ChangeDetector(_no_lookup, ["dynamodb", "postgres"])
    assert one.fingerprint("users", item) != two.fingerprint("users", item)
    assert two.fingerprint("users", item) == same_two.fingerprint("users", item)
    assert one.fingerprint("users", item) != one.fingerprint("tracks", item)


def test_stored_rows_are_unchanged_and_unknown_or_modified_ones_changed(stage: Settings) -> None:
    detector, sink = _detector(stage), DynamoDBSink(stage)
    histories = _items("listen_history", 230)  # more than two BatchGetItem calls
    assert detector.unchanged("listen_history", histories) == [False] * 230
    sink.write("listen_history", [_envelope("listen_history", h) for h in histories[:150]])
    assert detector.unchanged("listen_history", histories) == [True] * 150 + [False] * 80
    modified = {**histories[0], "items": [*histories[0]["items"], 1]}
    assert detector.unchanged("listen_history", [modified, histories[1]]) == [False, True]


def test_duplicate_keys_in_one_page_each_get_their_answer(stage: Settings) -> None:
    detector, sink = _detector(stage), DynamoDBSink(stage)
    item = _items("users", 1)[0]
    sink.write("users", [_envelope("users", item)])
    other = {**item, "updated_at": "2099-01-01T00:00:00"}
    assert detector.unchanged("users", [item, other, item]) == [True, False, True]


def test_an_item_that_cannot_be_serialized_is_changed(stage: Settings) -> None:
    """It is published, and its publishing quarantines it: the look-up must not fail."""
    detector, sink = _detector(stage), DynamoDBSink(stage)
    item = _items("users", 1)[0]
    sink.write("users", [_envelope("users", item)])
    broken = {**item, "last_name": "broken \ud800 text"}
    assert detector.unchanged("users", [broken, item]) == [False, True]


def test_an_older_version_than_the_stored_one_keeps_the_newer_fingerprint(
    stage: Settings,
) -> None:
    detector, sink = _detector(stage), DynamoDBSink(stage)
    item = _items("users", 1)[0]
    newer = {**item, "first_name": "Newer", "updated_at": "2025-12-01T00:00:00"}
    sink.write("users", [_envelope("users", newer)])
    sink.write("users", [_envelope("users", item)])  # rejected: older
    assert detector.unchanged("users", [item, newer]) == [False, True]


def test_no_fingerprint_is_stored_while_a_sink_before_dynamodb_fails(stage: Settings) -> None:
    items = _items("users", 5)
    records = [_record(_envelope("users", item), number) for number, item in enumerate(items, 1)]

    outcome = process_batch(records, _load_deps(stage, _Sink(fail=True)))
    assert len(outcome.failed_sequence_numbers) == 5
    assert DynamoDBSink(stage).count("users") == 0  # skipped: it is re-delivered anyway
    assert _detector(stage).unchanged("users", items) == [False] * 5

    working = _Sink()
    outcome = process_batch(records, _load_deps(stage, working))
    assert outcome.failed_sequence_numbers == []
    assert len(working.rows) == 5
    assert _detector(stage).unchanged("users", items) == [True] * 5


def test_quarantined_records_get_no_fingerprint(stage: Settings) -> None:
    good, bad = _items("users", 2)
    broken = _record(_envelope("users", {**bad, "email": 12}), 2)  # breaks the contract
    outcome = process_batch(
        [_record(_envelope("users", good), 1), broken], _load_deps(stage, _Sink())
    )
    assert outcome.failed_sequence_numbers == []
    assert _detector(stage).unchanged("users", [good, bad]) == [True, False]


def test_the_sinks_are_built_with_dynamodb_last() -> None:
    settings = Settings(sinks="dynamodb,postgres", postgres_dsn="postgresql://unused")
    assert [sink.name for sink in wiring.build_sinks(settings)] == ["postgres", "dynamodb"]


def test_change_detection_needs_the_dynamodb_sink_and_can_be_turned_off(stage: Settings) -> None:
    assert wiring.change_detector(Settings(sinks="postgres")) is None
    assert wiring.change_detector(Settings(sinks="dynamodb", change_detection=False)) is None
    off = Settings(table_prefix=stage.table_prefix, sinks="dynamodb", change_detection=False)
    item = _items("tracks", 1)[0]
    DynamoDBSink(off).write("tracks", [_envelope("tracks", item)])
    row = aws.client("dynamodb").get_item(
        TableName=stage.table_name("tracks"), Key={"id": {"N": str(item["id"])}}
    )["Item"]
    assert FINGERPRINT_ATTRIBUTE not in row
    assert _detector(stage).unchanged("tracks", [item]) == [False]


SERVED = 30
"""Users the fake API serves for the fail-open tests: 3 pages of 10."""


def served_users() -> list[dict[str, Any]]:
    return [validate_item("users", item) for item in iter_items("users", SERVED, 11)]


@pytest.fixture
def stored_source(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A fake API serving `SERVED` users, every one of which DynamoDB (the only sink) already
    stores with its fingerprint: a run with a working look-up publishes none of them."""
    with FakeApiServer(records=SERVED, seed=11) as api:
        settings = use_fresh_stage(
            monkeypatch,
            "failopen",
            PIPELINE_SINKS="dynamodb",
            PIPELINE_API_URL=api.url,
            PIPELINE_PAGE_SIZE="10",
            PIPELINE_RESOURCES="users",
        )
        items = served_users()
        DynamoDBSink(settings).write("users", [_envelope("users", item) for item in items])
        yield settings


def _published_items(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    """The items of `run_id` in the stream, read back from every shard."""
    kinesis = aws.client("kinesis")
    items: list[dict[str, Any]] = []
    for shard in kinesis.list_shards(StreamName=settings.stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=settings.stream_name,
            ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        while True:
            response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            envelopes = [decode_envelope(record["Data"]) for record in response["Records"]]
            items += [e.item for e in envelopes if e.run_id == run_id]
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
    return items


def _throttled() -> Exception:
    error = {"Code": "ProvisionedThroughputExceededException", "Message": "injected"}
    return ClientError({"Error": error}, "BatchGetItem")


def _unreachable() -> Exception:
    return EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")


@pytest.mark.parametrize("failure", [_throttled, _unreachable])
def test_a_failed_change_look_up_publishes_the_page_in_full(
    stored_source: Settings, failure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The look-up (BatchGetItem projecting `fp`) fails at the botocore boundary for every page:
    the ingest logs it per page and publishes every valid item, as if nothing were stored, and
    the run goes on; publishing is always safe, the sinks being newest-wins."""
    control = run_ingest(wiring.ingest_dependencies(), run_id="20260101T000000Z-c0ffee00")
    assert control.status == "published"
    baseline = control.resources["users"]
    assert baseline.unchanged > 0  # the look-up works: stored content is skipped
    assert baseline.unchanged + baseline.published + baseline.quarantined == SERVED

    users_table = stored_source.table_name("users")
    refused: list[str] = []

    def refuse_the_fingerprint_look_up(params: dict[str, Any], **_: Any) -> None:
        request = params.get("RequestItems", {}).get(users_table)
        if (
            request
            and FINGERPRINT_ATTRIBUTE in request.get("ExpressionAttributeNames", {}).values()
        ):
            refused.append(users_table)
            raise failure()

    client = aws.client("dynamodb")
    event = "before-parameter-build.dynamodb.BatchGetItem"
    client.meta.events.register(event, refuse_the_fingerprint_look_up)
    try:
        with caplog.at_level(logging.WARNING, logger="moovitamix"):
            result = run_ingest(wiring.ingest_dependencies(), run_id="20260101T010000Z-c0ffee01")
    finally:
        client.meta.events.unregister(event, refuse_the_fingerprint_look_up)

    assert result.status == "published"
    counts = result.resources["users"]
    assert counts.error is None
    assert len(refused) == counts.pages == 3  # one look-up a page, each refused
    assert counts.fetched == SERVED
    assert counts.unchanged == 0
    assert (
        counts.published == SERVED - counts.quarantined == baseline.published + baseline.unchanged
    )
    warnings = [r for r in caplog.records if r.getMessage().startswith("change look-up failed")]
    assert sorted(getattr(r, "page", None) for r in warnings) == [1, 2, 3]
    assert all(getattr(r, "entity", None) == "users" for r in warnings)
    expected = type(failure()).__name__
    assert all(getattr(r, "error", "").startswith(expected) for r in warnings)
    in_stream = _published_items(stored_source, result.run_id)
    assert len(in_stream) == counts.published
    assert {item["id"] for item in in_stream} == {item["id"] for item in served_users()}
    state = wiring.manifests(stored_source).get(result.run_id) or {}
    assert state["published.users"] == counts.published
    assert state.get("unchanged.users", 0) == 0  # counters start when first added to
