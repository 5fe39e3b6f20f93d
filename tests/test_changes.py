"""Change detection: what is skipped, and that nothing is skipped that no sink processed."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import aws
from chalicelib.changes import ChangeDetector
from chalicelib.contract import Envelope, partition_key, validate_item
from chalicelib.load import LoadDependencies, process_batch
from chalicelib.manifest import RunManifests
from chalicelib.quarantine import Quarantine
from chalicelib.stream import encode_envelope
from infra.provision import TABLE_KEYS, Provisioned, ensure_bucket, ensure_table
from localcloud.fakeapi import iter_items
from localcloud.stack import LocalCloud


def _users(count: int, start: int = 0) -> list[dict[str, Any]]:
    items = list(iter_items("users", start + count, 7))[start:]
    return [validate_item("users", item) for item in items]


def _envelope(item: dict[str, Any], run_id: str = "run-1") -> Envelope:
    return Envelope(entity="users", run_id=run_id, fetched_at="2026-01-01T00:00:00", item=item)


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
def detector(aws_env: str) -> ChangeDetector:
    name = f"state-{uuid.uuid4().hex[:8]}"
    ensure_table(name, TABLE_KEYS["state"], Provisioned())
    return ChangeDetector(aws.client("dynamodb"), name, ["dynamodb"])


class _Sink:
    """A sink that stores in memory, or fails every write."""

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


def _load_deps(aws_env: str, sink: _Sink, detector: ChangeDetector) -> LoadDependencies:
    suffix = uuid.uuid4().hex[:8]
    ensure_table(f"runs-{suffix}", TABLE_KEYS["runs"], Provisioned())
    ensure_bucket(f"quarantine-{suffix}", Provisioned())
    return LoadDependencies(
        sinks=[sink],
        quarantine=Quarantine(aws.client("s3"), f"quarantine-{suffix}"),
        manifests=RunManifests(aws.client("dynamodb"), f"runs-{suffix}"),
        changes=detector,
    )


_VALUES = st.integers(min_value=0, max_value=2**63 - 1) | st.text(max_size=5)  # validated items


@given(
    first=st.dictionaries(st.text(max_size=5), _VALUES, max_size=4),
    second=st.dictionaries(st.text(max_size=5), _VALUES, max_size=4),
)
def test_fingerprint_equal_exactly_when_content_equal(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    detector = ChangeDetector(client=None, table_name="unused", sinks=["dynamodb"])  # type: ignore[arg-type]
    same = detector.fingerprint("users", first) == detector.fingerprint("users", second)
    assert same == (first == second)
    reordered = dict(reversed(list(first.items())))
    assert detector.fingerprint("users", reordered) == detector.fingerprint("users", first)


def test_fingerprint_changes_with_the_set_of_sinks() -> None:
    item = _users(1)[0]
    one = ChangeDetector(None, "unused", ["dynamodb"])  # type: ignore[arg-type]
    two = ChangeDetector(None, "unused", ["postgres", "dynamodb"])  # type: ignore[arg-type]
    same_two = ChangeDetector(None, "unused", ["dynamodb", "postgres"])  # type: ignore[arg-type]
    assert one.fingerprint("users", item) != two.fingerprint("users", item)
    assert two.fingerprint("users", item) == same_two.fingerprint("users", item)


def test_unknown_keys_are_changed_and_recorded_ones_unchanged(detector: ChangeDetector) -> None:
    items = _users(230)  # more than one BatchGetItem and many BatchWriteItem chunks
    assert detector.unchanged("users", items) == [False] * 230
    detector.record("users", [_envelope(item) for item in items[:150]])
    assert detector.unchanged("users", items) == [True] * 150 + [False] * 80


def test_a_modified_item_is_changed(detector: ChangeDetector) -> None:
    items = _users(3)
    detector.record("users", [_envelope(item) for item in items])
    modified = {**items[1], "email": "someone.else@example.com"}
    assert detector.unchanged("users", [items[0], modified, items[2]]) == [True, False, True]


def test_duplicate_keys_in_one_page_are_looked_up_once(detector: ChangeDetector) -> None:
    item = _users(1)[0]
    detector.record("users", [_envelope(item)])
    other = {**item, "updated_at": "2099-01-01T00:00:00"}
    assert detector.unchanged("users", [item, other, item]) == [True, False, True]


def test_the_newest_version_of_a_batch_is_recorded(detector: ChangeDetector) -> None:
    item = _users(1)[0]
    newer = {**item, "first_name": "Newer", "updated_at": "2099-01-01T00:00:00"}
    detector.record("users", [_envelope(newer), _envelope(item)])
    assert detector.unchanged("users", [item, newer]) == [False, True]


def test_load_records_state_only_after_the_sinks_stored(
    aws_env: str, detector: ChangeDetector
) -> None:
    items = _users(5)
    records = [_record(_envelope(item), number) for number, item in enumerate(items, 1)]

    failing = _Sink(fail=True)
    outcome = process_batch(records, _load_deps(aws_env, failing, detector))
    assert len(outcome.failed_sequence_numbers) == 5
    assert detector.unchanged("users", items) == [False] * 5  # never stored: publish again

    working = _Sink()
    outcome = process_batch(records, _load_deps(aws_env, working, detector))
    assert outcome.failed_sequence_numbers == []
    assert len(working.rows) == 5
    assert detector.unchanged("users", items) == [True] * 5


def test_quarantined_records_get_no_state(aws_env: str, detector: ChangeDetector) -> None:
    good, bad = _users(2)
    broken = _record(_envelope({**bad, "email": 12}), 2)  # breaks the contract: quarantined
    outcome = process_batch(
        [_record(_envelope(good), 1), broken], _load_deps(aws_env, _Sink(), detector)
    )
    assert outcome.failed_sequence_numbers == []
    assert detector.unchanged("users", [good, bad]) == [True, False]


@pytest.mark.e2e
def test_second_run_over_an_unchanged_source_publishes_and_writes_nothing(
    state_dir: Path,
) -> None:
    with LocalCloud(state_dir, records=300, extra_env={"PIPELINE_PAGE_SIZE": "50"}) as cloud:
        first = cloud.run()
        assert first.status == "succeeded", first.errors
        second = cloud.run()
        assert second.status == "succeeded", second.errors
    for entity, counts in second.entities.items():
        fetched = first.entities[entity]["fetched"]
        assert counts["fetched"] == fetched
        assert counts["published"] == 0
        assert counts["written"] == {"dynamodb": 0}
        assert counts["unchanged"] == fetched - counts["quarantined"]
        assert counts["stored"] == first.entities[entity]["stored"]


def test_with_dynamodb_alone_the_rows_hold_the_state(aws_env: str) -> None:
    from chalicelib.changes import SinkRowChangeDetector
    from chalicelib.settings import Settings
    from chalicelib.sinks.dynamodb import DynamoDBSink

    prefix = f"rows-{uuid.uuid4().hex[:8]}"
    for suffix in ("users", "tracks", "listen_history"):
        ensure_table(f"{prefix}-{suffix}", TABLE_KEYS[suffix], Provisioned())
    settings = Settings(table_prefix=prefix, sinks="dynamodb")
    sink = DynamoDBSink(settings)
    detector = SinkRowChangeDetector(aws.client("dynamodb"), prefix, settings.sink_list)
    histories = [validate_item("listen_history", h) for h in iter_items("listen_history", 120, 3)]
    stored = histories[:110]
    assert detector.unchanged("listen_history", histories) == [False] * 120
    history_envelopes = [
        Envelope(entity="listen_history", run_id="r", fetched_at="2026-01-01T00:00:00", item=item)
        for item in stored
    ]
    assert len(sink.write("listen_history", history_envelopes)) == 110
    detector.record("listen_history", history_envelopes)  # nothing to do: the rows hold it
    assert detector.unchanged("listen_history", histories) == [True] * 110 + [False] * 10
    changed = {**stored[0], "items": [*stored[0]["items"], 1]}
    assert detector.unchanged("listen_history", [changed]) == [False]
    users = _users(3)
    sink.write("users", [_envelope(users[0])])
    assert detector.unchanged("users", users) == [True, False, False]
