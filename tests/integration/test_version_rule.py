"""The version rule in both stores (DynamoDB on moto, the embedded PostgreSQL), side by side.

A version is `(updated_at, fetched_at)`: the newer `updated_at` wins, on an equal one the later
fetch wins (a content that changed while its `updated_at` did not is applied), the same record
again changes nothing. A listen history is one row per instant of `created_at`, whatever its
spelling. And the fingerprint a DynamoDB row carries always describes the content of that row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.load.sinks.dynamodb import ROW_MODELS, DynamoDBSink, key_to_wire
from chalicelib.load.sinks.postgres import PostgresSink
from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.model.contract import entity_key, validate_item, version_rank
from chalicelib.model.envelope import Envelope
from chalicelib.model.fingerprint import (
    FINGERPRINT_ATTRIBUTE,
    content_fingerprint,
    fingerprint_salt,
)
from chalicelib.settings import Settings
from tests.helpers.factories import listen_history, next_id, provision_stores, unique_name, user
from tests.helpers.postgres_helpers import make_sink

FETCH = datetime(2026, 1, 1, 12, 0, 0)


def fetched(step: int) -> str:
    """The fetch time of run `step`, as the ingest writes it."""
    return (FETCH + timedelta(hours=step)).isoformat(timespec="microseconds") + "+00:00"


def envelope(entity: str, item: dict[str, Any], step: int) -> Envelope:
    return Envelope(
        entity=entity,  # type: ignore[arg-type]
        run_id=f"run-{step}",
        fetched_at=fetched(step),
        item=validate_item(entity, item),
    )


@pytest.fixture
def stores(
    aws_env: str, postgres_credentials: Credentials
) -> tuple[Settings, DynamoDBSink, PostgresSink]:
    settings = provision_stores(unique_name("versions"))
    return settings, DynamoDBSink(settings), make_sink(postgres_credentials)


def write_both(
    stores: tuple[Settings, DynamoDBSink, PostgresSink], entity: str, envelopes: list[Envelope]
) -> tuple[int, int]:
    """PostgreSQL then DynamoDB, as the load does; returns how many each stored."""
    _, dynamodb, postgres = stores
    return len(postgres.write(entity, envelopes)), len(dynamodb.write(entity, envelopes))


def rows(stores: tuple[Settings, DynamoDBSink, PostgresSink], entity: str) -> tuple[Any, Any]:
    _, dynamodb, postgres = stores
    by_key = {
        sink.name: sorted(sink.rows(entity), key=lambda row: entity_key(entity, row))
        for sink in (dynamodb, postgres)
    }
    return by_key["dynamodb"], by_key["postgres"]


def stored_fingerprint(settings: Settings, entity: str, key: tuple[Any, ...]) -> bytes | None:
    from chalicelib.aws import clients as aws

    row = aws.client("dynamodb").get_item(
        TableName=ROW_MODELS[entity].Meta.table_name, Key=key_to_wire(entity, key)
    )["Item"]
    value = row.get(FINGERPRINT_ATTRIBUTE, {}).get("B")
    return None if value is None else bytes(value)


def test_a_changed_content_with_an_equal_updated_at_is_applied_in_both_stores(
    stores: tuple[Settings, DynamoDBSink, PostgresSink],
) -> None:
    settings = stores[0]
    uid = next_id()
    first = user(id=uid, last_name="Before", updated_at="2025-03-01T00:00:00")
    corrected = user(id=uid, last_name="After", updated_at="2025-03-01T00:00:00.000")
    assert write_both(stores, "users", [envelope("users", first, 1)]) == (1, 1)
    assert write_both(stores, "users", [envelope("users", corrected, 2)]) == (1, 1)
    dynamodb, postgres = rows(stores, "users")
    assert [r for r in dynamodb if r["id"] == uid] == [corrected]
    assert [r for r in postgres if r["id"] == uid] == [corrected]
    # the fingerprint is the one of the content the row holds
    salt = fingerprint_salt(settings.sink_list)
    assert stored_fingerprint(settings, "users", (uid,)) == content_fingerprint(
        salt, "users", validate_item("users", corrected)
    )
    # the older fetch of the first content, delivered again late, changes nothing anywhere
    assert write_both(stores, "users", [envelope("users", first, 1)]) == (0, 0)
    assert [r for r in rows(stores, "users")[0] if r["id"] == uid] == [corrected]
    assert stored_fingerprint(settings, "users", (uid,)) == content_fingerprint(
        salt, "users", validate_item("users", corrected)
    )


def test_an_older_updated_at_never_wins_even_when_fetched_later(
    stores: tuple[Settings, DynamoDBSink, PostgresSink],
) -> None:
    uid = next_id()
    newer = user(id=uid, last_name="New", updated_at="2025-03-02T00:00:00")
    older = user(id=uid, last_name="Old", updated_at="2025-03-01T00:00:00")
    write_both(stores, "users", [envelope("users", newer, 1)])
    assert write_both(stores, "users", [envelope("users", older, 2)]) == (0, 0)
    dynamodb, postgres = rows(stores, "users")
    assert [r["last_name"] for r in dynamodb if r["id"] == uid] == ["New"]
    assert [r["last_name"] for r in postgres if r["id"] == uid] == ["New"]


@pytest.mark.parametrize(
    "spellings",
    [
        ("2025-02-03T10:00:00+02:00", "2025-02-03T08:00:00"),
        ("2025-02-03T08:00:00", "2025-02-03T08:00:00.000"),
        ("2025-02-03T08:00:00Z", "2025-02-03T08:00:00.000000"),
    ],
)
def test_one_instant_of_created_at_is_one_row_in_both_stores(
    stores: tuple[Settings, DynamoDBSink, PostgresSink], spellings: tuple[str, str]
) -> None:
    uid = next_id()
    first, second = (
        listen_history(user_id=uid, created_at=text, items=[n]) for n, text in enumerate(spellings)
    )
    write_both(stores, "listen_history", [envelope("listen_history", first, 1)])
    write_both(stores, "listen_history", [envelope("listen_history", second, 2)])
    dynamodb, postgres = rows(stores, "listen_history")
    mine = (
        [r for r in dynamodb if r["user_id"] == uid],
        [r for r in postgres if r["user_id"] == uid],
    )
    assert mine[0] == mine[1] == [second]  # the later fetch, and its text as served
    keys = [stores[1].stored_versions("listen_history", [entity_key("listen_history", second)])]
    assert keys[0] == {entity_key("listen_history", second): second["updated_at"]}


# --- any delivery order, both stores ------------------------------------------------------------

VERSIONS = ["2025-01-01T00:00:00", "2025-01-01T00:00:00.000001", "2025-01-02T00:00:00+01:00"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    deliveries=st.lists(
        st.tuples(st.sampled_from(VERSIONS), st.integers(0, 3), st.sampled_from("abc")),
        min_size=1,
        max_size=6,
    ),
    batch=st.integers(1, 3),
)
def test_any_delivery_order_ends_with_the_same_newest_version_in_both_stores(
    stores: tuple[Settings, DynamoDBSink, PostgresSink],
    deliveries: list[tuple[str, int, str]],
    batch: int,
) -> None:
    """Versions (updated_at, fetch) delivered in any order and batching, with repeats: both
    stores end with the greatest version, and agree with each other."""
    uid = next_id()
    envelopes = [
        envelope("users", user(id=uid, updated_at=version, last_name=name), step)
        for version, step, name in deliveries
    ]
    for start in range(0, len(envelopes), batch):
        write_both(stores, "users", envelopes[start : start + batch])

    best = max(version_rank(e) for e in envelopes)
    winner = next(e for e in envelopes if version_rank(e) == best)  # a full tie: the first stays
    dynamodb, postgres = rows(stores, "users")
    assert [r for r in dynamodb if r["id"] == uid] == [winner.item]
    assert [r for r in postgres if r["id"] == uid] == [winner.item]


def test_a_row_frozen_in_the_future_before_the_check_is_corrected_in_both_stores(
    stores: tuple[Settings, DynamoDBSink, PostgresSink],
) -> None:
    """A row stored with updated_at 9999-... (by a pipeline that did not refuse it) must not
    win against the corrected record: a stored version beyond the tolerance never wins."""
    uid = next_id()
    frozen_item = user(id=uid, last_name="Frozen", updated_at="9999-12-31T23:59:59")
    frozen = Envelope(
        entity="users",
        run_id="old",
        fetched_at=fetched(1),
        item=validate_item("users", frozen_item, not_after=datetime.max),
    )
    assert write_both(stores, "users", [frozen]) == (1, 1)
    fixed = user(id=uid, last_name="Fixed", updated_at="2025-03-01T00:00:00")
    assert write_both(stores, "users", [envelope("users", fixed, 2)]) == (1, 1)
    dynamodb, postgres = rows(stores, "users")
    assert [r for r in dynamodb if r["id"] == uid] == [fixed]
    assert [r for r in postgres if r["id"] == uid] == [fixed]
    # ... and from then on the ordinary rule holds again
    older = user(id=uid, last_name="Older", updated_at="2025-01-01T00:00:00")
    assert write_both(stores, "users", [envelope("users", older, 3)]) == (0, 0)
