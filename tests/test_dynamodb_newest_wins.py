"""The DynamoDB sink keeps the newest version of every key, whatever the arrival order."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.contract import Envelope, validate_item
from chalicelib.settings import Settings
from chalicelib.sinks.dynamodb import DynamoDBSink, to_row, to_wire
from infra.provision import TABLE_KEYS, Provisioned, ensure_table
from localcloud.fakeapi import generate_item, iter_items

_BASE = [validate_item("users", item) for item in iter_items("users", 3, 11)]


def _version(item: dict[str, object], day: int) -> Envelope:
    changed = {**item, "first_name": f"v{day}", "updated_at": f"2025-01-{day:02d}T00:00:00"}
    return Envelope(entity="users", run_id="r", fetched_at="2026-01-01T00:00:00", item=changed)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    days=st.lists(
        st.tuples(st.integers(min_value=0, max_value=2), st.integers(min_value=1, max_value=28)),
        min_size=1,
        max_size=40,
    ),
    batch=st.integers(min_value=1, max_value=40),
)
def test_any_order_and_batching_stores_the_newest(
    aws_env: str, days: list[tuple[int, int]], batch: int
) -> None:
    prefix = f"nw-{uuid.uuid4().hex[:8]}"
    ensure_table(f"{prefix}-users", TABLE_KEYS["users"], Provisioned())
    sink = DynamoDBSink(Settings(table_prefix=prefix))
    envelopes = [_version(_BASE[which], day) for which, day in days]
    for start in range(0, len(envelopes), batch):
        sink.write("users", envelopes[start : start + batch])
    stored = {row["id"]: row for row in sink.rows("users")}
    for which in {which for which, _ in days}:
        newest = max(day for other, day in days if other == which)
        row = stored[_BASE[which]["id"]]
        assert row["updated_at"] == f"2025-01-{newest:02d}T00:00:00"
        assert row["first_name"] == f"v{newest}"
    assert len(stored) == len({which for which, _ in days})


@settings(max_examples=30, deadline=None)
@given(
    entity=st.sampled_from(["users", "tracks", "listen_history"]),
    index=st.integers(min_value=0, max_value=4999),
    fingerprint=st.none() | st.binary(min_size=16, max_size=16),
)
def test_wire_rows_equal_pynamodb_serialization(
    entity: str, index: int, fingerprint: bytes | None
) -> None:
    item = validate_item(entity, generate_item(entity, index, 5000, 1))
    envelope = Envelope(entity=entity, run_id="r-1", fetched_at="2026-01-01T00:00:00", item=item)
    assert (
        to_wire(entity, envelope, fingerprint) == to_row(entity, envelope, fingerprint).serialize()
    )


def test_wire_rows_equal_pynamodb_serialization_for_hostile_text() -> None:
    for entity in ("users", "tracks", "listen_history"):
        for item in iter_items(entity, 400, 2):  # one in 40 has a hostile field
            envelope = Envelope(
                entity=entity, run_id="r", fetched_at="f", item=validate_item(entity, item)
            )
            assert to_wire(entity, envelope) == to_row(entity, envelope).serialize()
