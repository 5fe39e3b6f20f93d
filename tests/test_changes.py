"""Change detection: what is skipped, and that nothing is skipped that a sink lacks."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.deadletter.quarantine import Quarantine
from chalicelib.ingest.changes import ChangeDetector
from chalicelib.load import LoadDependencies, process_batch
from chalicelib.manifest import RunManifests
from chalicelib.model.contract import partition_key, validate_item
from chalicelib.model.envelope import Envelope, encode_envelope
from chalicelib.model.fingerprint import FINGERPRINT_ATTRIBUTE
from chalicelib.settings import Settings
from chalicelib.sinks.dynamodb import DynamoDBSink
from localcloud.fakeapi import iter_items
from localcloud.stack import LocalCloud
from tests.factories import use_fresh_stage


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


@pytest.mark.e2e
def test_a_rerun_over_an_unchanged_source_publishes_and_writes_nothing(state_dir: Path) -> None:
    with LocalCloud(state_dir, records=300, extra_env={"PIPELINE_PAGE_SIZE": "50"}) as cloud:
        first = cloud.run()
        assert first.status == "succeeded", first.errors
        second = cloud.run()
        assert second.status == "succeeded", second.errors
        # rows stored before change detection existed have no fingerprint: published again
        dynamodb = aws.client("dynamodb")
        table = cloud.settings.table_name("users")
        keys = [row["id"] for row in dynamodb.scan(TableName=table, Limit=5)["Items"]]
        for key in keys:
            dynamodb.update_item(
                TableName=table, Key={"id": key}, UpdateExpression=f"REMOVE {FINGERPRINT_ATTRIBUTE}"
            )
        third = cloud.run()
        assert third.status == "succeeded", third.errors
        fourth = cloud.run()
        assert fourth.status == "succeeded", fourth.errors
    for entity, counts in second.entities.items():
        fetched = first.entities[entity]["fetched"]
        assert counts["fetched"] == fetched
        assert counts["published"] == 0
        assert counts["written"] == {"postgres": 0, "dynamodb": 0}
        assert counts["unchanged"] == fetched - counts["quarantined"]
        assert counts["stored"] == first.entities[entity]["stored"]
    assert third.entities["users"]["published"] == len(keys) == 5
    assert third.entities["users"]["unchanged"] == 295
    # equal updated_at, later fetch: the version rule applies them again, with their fingerprint
    assert third.entities["users"]["written"] == {"postgres": 5, "dynamodb": 5}
    assert third.entities["tracks"]["published"] == 0
    # ... so the row's fingerprint describes its content again, and the next run skips them
    assert fourth.entities["users"]["published"] == 0
