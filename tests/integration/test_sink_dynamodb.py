"""The DynamoDB sink against moto: newest wins, re-delivery is a no-op, rows keep the API's shape.

Kinesis delivers at least once and retries reorder, so the sink must store the newest
`updated_at` of each key whatever order versions arrive in, within a batch and across batches.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.load.sinks import newest_per_key
from chalicelib.load.sinks.dynamodb import (
    MAX_ITEM_BYTES,
    ROW_MODELS,
    DynamoDBSink,
    item_size,
    row_to_item,
    row_values,
)
from chalicelib.model.contract import ENTITIES, entity_key, validate_item
from chalicelib.model.envelope import Envelope
from chalicelib.settings import Settings
from localcloud.fakeapi import HOSTILE_STRINGS, iter_items
from tests.helpers.factories import (
    item_for,
    listen_history,
    next_id,
    provision_stores,
    track,
    unique_name,
)

V1, V2, V3 = "2025-01-01T00:00:00", "2025-01-01T00:00:00.000001", "2025-06-01T12:30:00.5"


@pytest.fixture
def stores(aws_env: str) -> Settings:
    return provision_stores(unique_name("sink"))


@pytest.fixture
def sink(stores: Settings) -> DynamoDBSink:
    return DynamoDBSink(stores)


def envelope(entity: str, item: dict[str, Any], run_id: str = "run-1") -> Envelope:
    return Envelope(
        entity=entity,  # type: ignore[arg-type]
        run_id=run_id,
        fetched_at="2025-07-15T12:00:00+00:00",
        item=validate_item(entity, item),
    )


def stored(sink: DynamoDBSink, entity: str) -> dict[Any, dict[str, Any]]:
    return {entity_key(entity, row): row for row in sink.rows(entity)}


def stored_runs(entity: str) -> dict[Any, str]:
    """The run id each stored row came from, by key."""
    rows = ROW_MODELS[entity].scan()
    return {entity_key(entity, row_to_item(entity, row)): row.run_id for row in rows}


@pytest.mark.parametrize("entity", ENTITIES)
def test_rows_come_back_in_the_api_shape(sink: DynamoDBSink, entity: str) -> None:
    items = list(iter_items(entity, 60, seed=3))
    written = sink.write(entity, [envelope(entity, item) for item in items])

    assert len(written) == len({entity_key(entity, item) for item in items})
    rows = stored(sink, entity)
    assert rows == {entity_key(entity, item): item for item in items}
    for key, row in rows.items():  # 1 == 1.0 in Python: compare the types too
        served = next(item for item in items if entity_key(entity, item) == key)
        assert {k: type(v) for k, v in row.items()} == {k: type(v) for k, v in served.items()}
    assert sink.count(entity) == len(rows)


def test_older_version_never_overwrites_a_newer_one(sink: DynamoDBSink) -> None:
    key = next_id()
    assert (
        len(
            sink.write(
                "users",
                [envelope("users", item_for("users", id=key, updated_at=V2, first_name="new"))],
            )
        )
        == 1
    )
    older = envelope("users", item_for("users", id=key, updated_at=V1, first_name="old"), "run-2")

    assert sink.write("users", [older]) == []
    row = stored(sink, "users")[(key,)]
    assert (row["first_name"], row["updated_at"]) == ("new", V2)
    assert stored_runs("users")[(key,)] == "run-1"


def test_newer_version_replaces_the_stored_one(sink: DynamoDBSink) -> None:
    key = next_id()
    sink.write("tracks", [envelope("tracks", track(id=key, updated_at=V1, name="v1"))])
    newer = envelope("tracks", track(id=key, updated_at=V3, name="v3"), "run-2")

    assert sink.write("tracks", [newer]) == [newer]
    assert stored(sink, "tracks")[(key,)]["name"] == "v3"
    assert stored_runs("tracks")[(key,)] == "run-2"


def test_equal_version_redelivered_changes_nothing(sink: DynamoDBSink) -> None:
    key = next_id()
    first = envelope("users", item_for("users", id=key, updated_at=V2, last_name="first"))
    sink.write("users", [first])
    again = envelope("users", item_for("users", id=key, updated_at=V2, last_name="second"), "run-9")

    assert sink.write("users", [first]) == []
    assert sink.write("users", [again]) == []
    assert stored(sink, "users")[(key,)]["last_name"] == "first"
    assert stored_runs("users")[(key,)] == "run-1"


def test_out_of_order_versions_in_one_batch(sink: DynamoDBSink) -> None:
    key = next_id()
    versions = [(V2, "b"), (V3, "c"), (V1, "a"), (V3, "c-duplicate")]
    batch = [envelope("tracks", track(id=key, updated_at=v, album=a)) for v, a in versions]

    written = sink.write("tracks", batch)

    assert [e.item["album"] for e in written] == ["c"]  # the first of equal newest versions
    assert stored(sink, "tracks")[(key,)]["album"] == "c"


def test_fraction_less_timestamps_compare_as_instants(sink: DynamoDBSink) -> None:
    key = next_id()
    sink.write(
        "users", [envelope("users", item_for("users", id=key, updated_at="2025-01-01T00:00:00.5"))]
    )
    # Lexically "…:00.5" > "…:01" would keep the older; as instants :01 is newer.
    sink.write(
        "users", [envelope("users", item_for("users", id=key, updated_at="2025-01-01T00:00:01"))]
    )
    sink.write(
        "users", [envelope("users", item_for("users", id=key, updated_at="2025-01-01T00:00:00"))]
    )
    assert stored(sink, "users")[(key,)]["updated_at"] == "2025-01-01T00:00:01"


def test_updated_before_created_is_stored(sink: DynamoDBSink) -> None:
    key = next_id()
    item = track(id=key, created_at="2025-07-13T01:47:15.825923", updated_at="2020-01-01T00:00:00")
    sink.write("tracks", [envelope("tracks", item)])
    assert stored(sink, "tracks")[(key,)] == item


def test_listen_history_keeps_several_rows_per_user(sink: DynamoDBSink) -> None:
    user_id = next_id()
    rows = [
        listen_history(user_id=user_id, created_at="2025-01-01T00:00:00", items=[3, 1, 2]),
        listen_history(user_id=user_id, created_at="2025-01-01T00:00:00.000001", items=[9]),
        listen_history(user_id=user_id, created_at="2025-02-01T10:00:00.5", items=[]),
    ]
    assert len(sink.write("listen_history", [envelope("listen_history", r) for r in rows])) == 3
    mine = {k: v for k, v in stored(sink, "listen_history").items() if k[0] == user_id}
    assert mine == {entity_key("listen_history", r): r for r in rows}


def test_users_and_tracks_may_share_an_id(sink: DynamoDBSink) -> None:
    key = next_id()
    sink.write("users", [envelope("users", item_for("users", id=key))])
    sink.write("tracks", [envelope("tracks", track(id=key))])
    assert (key,) in stored(sink, "users")
    assert (key,) in stored(sink, "tracks")


@pytest.mark.parametrize("key", [0, 2**53 + 1, 2**63 - 1])
def test_big_ids_keep_every_digit(sink: DynamoDBSink, key: int) -> None:
    item = listen_history(user_id=key, items=[2**63 - 1, 2**53 + 1, 0])
    sink.write("listen_history", [envelope("listen_history", item)])
    sink.write("users", [envelope("users", item_for("users", id=key))])
    assert stored(sink, "listen_history")[(key, item["created_at"])] == item
    assert stored(sink, "users")[(key,)]["id"] == key


def test_hostile_strings_are_stored_verbatim(sink: DynamoDBSink) -> None:
    hostile = [*HOSTILE_STRINGS, "", " ", "x" * 50_000]
    items: dict[tuple[int], dict[str, Any]] = {}
    for text in hostile:
        track_id = next_id()
        items[(track_id,)] = track(id=track_id, name=text, artist=text[::-1], album=text.upper())
    sink.write("tracks", [envelope("tracks", item) for item in items.values()])
    rows = stored(sink, "tracks")
    for key, item in items.items():
        assert rows[key] == item


def test_more_keys_than_one_batch_get(sink: DynamoDBSink) -> None:
    keys = [next_id() for _ in range(230)]  # BatchGetItem reads 100 keys, BatchWriteItem 25
    old = [envelope("users", item_for("users", id=k, updated_at=V2)) for k in keys]
    assert len(sink.write("users", old)) == 230

    assert (
        sink.write(
            "users", [envelope("users", item_for("users", id=k, updated_at=V1)) for k in keys]
        )
        == []
    )
    newer = [envelope("users", item_for("users", id=k, updated_at=V3)) for k in keys]
    assert len(sink.write("users", newer)) == 230
    rows = stored(sink, "users")
    assert all(rows[(k,)]["updated_at"] == V3 for k in keys)


def test_newest_per_key_keeps_the_first_of_equals() -> None:
    a = envelope("users", item_for("users", id=1, updated_at=V2), "a")
    b = envelope("users", item_for("users", id=1, updated_at=V2), "b")
    c = envelope("users", item_for("users", id=2, updated_at=V1), "c")
    assert newest_per_key("users", [a, c, b]) == {(1,): a, (2,): c}


_example = itertools.count()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    versions=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5), st.booleans()), min_size=1, max_size=30
    ),
    cuts=st.sets(st.integers(1, 29), max_size=6),
)
def test_any_delivery_order_stores_the_first_newest_version(
    sink: DynamoDBSink, versions: list[tuple[int, int, bool]], cuts: set[int]
) -> None:
    """Versions of 3 keys in any order, split into batches anyhow: the newest wins, and among
    equal newest versions the first delivered stays (later re-deliveries change nothing)."""
    base = next_id() * 10
    deliveries = []
    for position, (key, version, whole) in enumerate(versions):
        stamp = f"2025-01-01T00:00:0{version}" + ("" if whole else ".000000")
        item = item_for("users", id=base + key, updated_at=stamp, first_name=f"p{position}")
        deliveries.append(envelope("users", item, run_id=f"run-{next(_example)}-{position}"))
    bounds = [0, *sorted(c for c in cuts if c < len(deliveries)), len(deliveries)]
    for start, stop in itertools.pairwise(bounds):
        sink.write("users", deliveries[start:stop])

    rows = stored(sink, "users")
    for key in {base + k for k, _, _ in versions}:
        mine = [e for e in deliveries if e.item["id"] == key]
        newest = max(int(e.item["updated_at"][18]) for e in mine)
        first_newest = next(e for e in mine if int(e.item["updated_at"][18]) == newest)
        assert rows[(key,)]["first_name"] == first_newest.item["first_name"]


def test_rows_up_to_the_item_limit_are_accepted_and_beyond_rejected(sink: DynamoDBSink) -> None:
    key = next_id()
    probe = envelope("tracks", track(id=key, name=""))
    room = MAX_ITEM_BYTES - item_size(row_values("tracks", probe))
    at_limit = envelope("tracks", track(id=key, name="é" * (room // 2)))
    assert item_size(row_values("tracks", at_limit)) <= MAX_ITEM_BYTES
    assert sink.rejects("tracks", at_limit) is None
    assert sink.write("tracks", [at_limit]) == [at_limit]  # DynamoDB (moto) takes it

    other = next_id()  # its digits count: measure its own room
    room = MAX_ITEM_BYTES - item_size(row_values("tracks", envelope("tracks", track(id=other))))
    room += len(track()["name"].encode())
    over = envelope("tracks", track(id=other, name="x" * (room + 1)))
    assert item_size(row_values("tracks", over)) == MAX_ITEM_BYTES + 1
    assert "400000" in (sink.rejects("tracks", over) or "")


@pytest.mark.parametrize("entity", ENTITIES)
def test_ordinary_rows_are_never_rejected(sink: DynamoDBSink, entity: str) -> None:
    for item in iter_items(entity, 100, seed=8):
        assert sink.rejects(entity, envelope(entity, item)) is None


def test_numbers_are_measured_by_their_digits_not_21_bytes(sink: DynamoDBSink) -> None:
    """A 100 KB history must not be refused as 440 KB (one int was counted as 21 bytes)."""
    items = list(range(100_000, 100_000 + 16_000))  # 6-digit track ids, ~112 KB as JSON
    history = envelope("listen_history", listen_history(user_id=1, items=items))
    size = item_size(row_values("listen_history", history))
    assert 16_000 * 8 <= size < 16_000 * 9 + 500
    assert sink.rejects("listen_history", history) is None


def test_a_big_history_is_stored_by_dynamodb(sink: DynamoDBSink) -> None:
    user_id = next_id()
    items = list(range(100_000, 100_000 + 40_000))  # ~330 KB as DynamoDB counts it
    history = envelope("listen_history", listen_history(user_id=user_id, items=items))
    assert sink.rejects("listen_history", history) is None
    assert sink.write("listen_history", [history]) == [history]
    mine = [row for key, row in stored(sink, "listen_history").items() if key[0] == user_id]
    assert mine[0]["items"] == items
