"""The DynamoDB sink's hand-built wire rows are exactly PynamoDB's serialization of the model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.load.sinks.dynamodb import key_from_wire, key_to_wire, to_row, to_wire
from chalicelib.model.contract import validate_item
from chalicelib.model.envelope import Envelope
from localcloud.fakeapi import generate_item, iter_items


@settings(max_examples=60, deadline=None)
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
    wire = to_wire(entity, envelope, fingerprint)
    assert wire == to_row(entity, envelope, fingerprint).serialize()
    key = (item["user_id"], item["created_at"]) if entity == "listen_history" else (item["id"],)
    assert key_from_wire(entity, {**wire, **key_to_wire(entity, key)}) == key


def test_wire_rows_equal_pynamodb_serialization_for_hostile_text() -> None:
    for entity in ("users", "tracks", "listen_history"):
        for item in iter_items(entity, 400, 2):  # one in 40 has a hostile field
            envelope = Envelope(
                entity=entity, run_id="r", fetched_at="f", item=validate_item(entity, item)
            )
            assert to_wire(entity, envelope) == to_row(entity, envelope).serialize()
