"""PostgreSQL sink writes: verbatim values, typed columns, newest-wins, re-delivery, batches."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.load.sinks.postgres import PostgresSink
from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.model.contract import parse_timestamp
from chalicelib.model.envelope import Envelope
from localcloud.emulators.postgres import EmbeddedPostgres
from localcloud.fakeapi import HOSTILE_STRINGS
from tests.helpers.postgres_helpers import connect, envelope, history, make_sink, track, user

BASE = datetime(2025, 1, 1, 12, 0, 0, 123456)


def version(step: int) -> str:
    return (BASE + timedelta(seconds=step)).isoformat()


@pytest.fixture
def sink(postgres_credentials: Credentials) -> PostgresSink:
    return make_sink(postgres_credentials)


def test_rows_come_back_exactly_as_served(sink: PostgresSink) -> None:
    users = [user(1), user(2, first_name="Zoë")]
    tracks = [track(10), track(11, duration="125:07")]
    histories = [history(1, [11, 10, 11])]
    assert sink.write("users", [envelope("users", item) for item in users])
    assert sink.write("tracks", [envelope("tracks", item) for item in tracks])
    assert sink.write("listen_history", [envelope("listen_history", h) for h in histories])
    assert sink.rows("users") == users
    assert sink.rows("tracks") == tracks
    assert sink.rows("listen_history") == histories
    # same field order as the API (and the DynamoDB dump), so the dumps are byte-identical
    assert [list(row) for row in sink.rows("tracks")] == [list(item) for item in tracks]
    assert [sink.count(entity) for entity in ("users", "tracks", "listen_history")] == [2, 2, 1]


def test_columns_are_typed(sink: PostgresSink, postgres_credentials: Credentials) -> None:
    sink.write("tracks", [envelope("tracks", track(10, duration="125:07"))])
    sink.write("listen_history", [envelope("listen_history", history(1, [10]))])
    with connect(postgres_credentials) as connection:
        types = dict(
            connection.execute(
                "SELECT table_name || '.' || column_name, data_type "
                "FROM information_schema.columns WHERE table_schema = 'public'"
            ).fetchall()
        )
        row = connection.execute(
            "SELECT created_at, updated_at, duration, duration_s FROM tracks"
        ).fetchone()
    assert types["tracks.created_at"] == "timestamp without time zone"
    assert types["listen_history.created_at"] == "timestamp without time zone"
    assert types["listen_history_item.created_at"] == "timestamp without time zone"
    assert types["tracks.id"] == "bigint"
    assert types["tracks.duration_s"] == "integer"
    assert row == (
        datetime(2024, 1, 1, 0, 0, 0, 500000),
        datetime(2025, 1, 1, 0, 0, 0, 1),
        "125:07",
        125 * 60 + 7,
    )


@given(minutes=st.integers(0, 999), seconds=st.integers(0, 59))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_duration_is_kept_as_served_and_in_seconds(
    sink: PostgresSink, minutes: int, seconds: int
) -> None:
    served = f"{minutes:02d}:{seconds:02d}"
    sink.write(
        "tracks",
        [envelope("tracks", track(1, updated_at=version(minutes * 60 + seconds), duration=served))],
    )
    row = (
        sink.database.connection()
        .execute("SELECT duration, duration_s FROM tracks WHERE id = 1")
        .fetchone()
    )
    sink.database.connection().execute("DELETE FROM tracks")
    assert row == (served, minutes * 60 + seconds)


@pytest.mark.parametrize(
    ("served", "stored"),
    [
        ("2025-07-13T01:47:15.825923", datetime(2025, 7, 13, 1, 47, 15, 825923)),
        ("2025-07-13T01:47:15", datetime(2025, 7, 13, 1, 47, 15)),  # isoformat() sans fraction
        ("2025-07-13T01:47:15.000001", datetime(2025, 7, 13, 1, 47, 15, 1)),
    ],
)
def test_isoformat_timestamps_round_trip(
    sink: PostgresSink, postgres_credentials: Credentials, served: str, stored: datetime
) -> None:
    item = user(1, updated_at=served)
    sink.write("users", [envelope("users", item)])
    with connect(postgres_credentials) as connection:
        row = connection.execute("SELECT updated_at, timestamps_as_served FROM users").fetchone()
    assert row == (stored, None)
    assert sink.rows("users") == [item]


@pytest.mark.parametrize(
    ("served", "stored"),
    [
        ("2025-07-13T03:47:15.5+02:00", datetime(2025, 7, 13, 1, 47, 15, 500000)),  # zone: UTC
        ("2025-07-13T01:47:15.100", datetime(2025, 7, 13, 1, 47, 15, 100000)),
    ],
)
def test_other_spellings_keep_their_served_text(
    sink: PostgresSink, postgres_credentials: Credentials, served: str, stored: datetime
) -> None:
    item = history(1, [5], created_at=served, updated_at=served)
    sink.write("listen_history", [envelope("listen_history", item)])
    with connect(postgres_credentials) as connection:
        row = connection.execute(
            "SELECT created_at, updated_at, timestamps_as_served FROM listen_history"
        ).fetchone()
    assert row == (stored, stored, {"created_at": served, "updated_at": served})
    assert sink.rows("listen_history") == [item]


@pytest.mark.parametrize("hostile", HOSTILE_STRINGS)
def test_hostile_strings_are_stored_verbatim(
    sink: PostgresSink, postgres_credentials: Credentials, hostile: str
) -> None:
    users = [
        user(index + 1, **{field: hostile})
        for index, field in enumerate(
            ("first_name", "last_name", "email", "gender", "favorite_genres")
        )
    ]
    tracks = [
        track(index + 1, **{field: hostile})
        for index, field in enumerate(("name", "artist", "songwriters", "genres", "album"))
    ]
    assert len(sink.write("users", [envelope("users", item) for item in users])) == 5
    assert len(sink.write("tracks", [envelope("tracks", item) for item in tracks])) == 5
    assert sink.rows("users") == users
    assert sink.rows("tracks") == tracks
    with connect(postgres_credentials) as connection:  # and nothing was executed
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (5,)


def test_long_strings_are_stored_whole(sink: PostgresSink) -> None:
    long_text = "x" * 1999 + "é"
    item = track(1, name=long_text, album="🎵" * 2000)
    sink.write("tracks", [envelope("tracks", item)])
    assert sink.rows("tracks") == [item]


text_values = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=300)


@given(first_name=text_values, last_name=text_values, email=text_values)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_text_round_trips(
    sink: PostgresSink, first_name: str, last_name: str, email: str
) -> None:
    item = user(7, first_name=first_name, last_name=last_name, email=email)
    sink.database.connection().execute("DELETE FROM users")
    sink.write("users", [envelope("users", item)])
    assert sink.rows("users") == [item]


def test_newest_wins_and_equal_versions_change_nothing(
    sink: PostgresSink, postgres_credentials: Credentials
) -> None:
    v1, v2, v3 = (user(1, updated_at=version(step), first_name=f"v{step}") for step in (1, 2, 3))
    assert sink.write("users", [envelope("users", v2, run_id="a")]) != []
    assert sink.write("users", [envelope("users", v1, run_id="b")]) == []  # older: ignored
    assert sink.rows("users") == [v2]
    with connect(postgres_credentials) as connection:
        before = connection.execute("SELECT * FROM users").fetchall()
    assert sink.write("users", [envelope("users", v2, run_id="c")]) == []  # re-delivery
    with connect(postgres_credentials) as connection:
        assert connection.execute("SELECT * FROM users").fetchall() == before  # not even run_id
    written = sink.write("users", [envelope("users", v3, run_id="d")])
    assert [e.item for e in written] == [v3]
    assert sink.rows("users") == [v3]


def test_updated_at_earlier_than_created_at_is_fine(sink: PostgresSink) -> None:
    item = user(1, updated_at="2020-01-01T00:00:00.000001")  # the API does this
    sink.write("users", [envelope("users", item)])
    assert sink.rows("users") == [item]


def test_a_batch_keeps_the_newest_version_of_each_key(sink: PostgresSink) -> None:
    versions = [track(1, updated_at=version(step), name=f"v{step}") for step in (2, 5, 1, 3)]
    other = track(2)
    written = sink.write("tracks", [envelope("tracks", v) for v in [*versions, other]])
    assert sorted(e.item["name"] for e in written) == ["song 2", "v5"]
    assert sink.rows("tracks") == [versions[1], other]


def test_equal_versions_in_one_batch_keep_the_first(sink: PostgresSink) -> None:
    first = user(1, first_name="first")
    second = user(1, first_name="second")
    written = sink.write("users", [envelope("users", first), envelope("users", second)])
    assert [e.item for e in written] == [first]
    assert sink.rows("users") == [first]


def test_one_history_spelled_two_ways_in_one_batch_is_one_row(sink: PostgresSink) -> None:
    """(user_id, created_at) is the key as stored: one instant, however it is written."""
    older = history(1, [1], created_at="2024-06-01T10:00:00", updated_at=version(1))
    newer = history(1, [2], created_at="2024-06-01T10:00:00.000000", updated_at=version(2))
    written = sink.write("listen_history", [envelope("listen_history", h) for h in (older, newer)])
    assert [e.item for e in written] == [newer]
    assert sink.rows("listen_history") == [newer]


def test_history_items_keep_order_and_are_replaced_by_newer_versions(
    sink: PostgresSink, postgres_credentials: Credentials
) -> None:
    first = history(1, [30, 10, 20, 10], updated_at=version(1))
    sink.write("listen_history", [envelope("listen_history", first)])
    with connect(postgres_credentials) as connection:
        items = connection.execute(
            "SELECT position, track_id FROM listen_history_item ORDER BY position"
        ).fetchall()
    assert items == [(1, 30), (2, 10), (3, 20), (4, 10)]
    older = history(1, [99], updated_at=version(0))
    assert sink.write("listen_history", [envelope("listen_history", older)]) == []
    assert sink.rows("listen_history") == [first]
    newer = history(1, [20], updated_at=version(2))
    assert sink.write("listen_history", [envelope("listen_history", newer)]) != []
    assert sink.rows("listen_history") == [newer]
    emptied = history(1, [], updated_at=version(3))
    sink.write("listen_history", [envelope("listen_history", emptied)])
    assert sink.rows("listen_history") == [emptied]
    with connect(postgres_credentials) as connection:
        assert connection.execute("SELECT count(*) FROM listen_history_item").fetchone() == (0,)


def test_a_write_is_one_transaction(sink: PostgresSink) -> None:
    """A batch whose last row the database refuses stores none of its rows."""
    good = envelope("tracks", track(1))
    bad = Envelope(  # bypasses the contract: the schema's own check must catch it
        entity="tracks", run_id="r", fetched_at="f", item={**track(2), "duration": "99:99"}
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        sink.write("tracks", [good, bad])
    assert sink.count("tracks") == 0
    assert sink.write("tracks", [good]) == [good]


def test_a_dropped_connection_is_reopened(
    sink: PostgresSink, postgres_server: EmbeddedPostgres, postgres_credentials: Credentials
) -> None:
    sink.write("users", [envelope("users", user(1))])
    backend = sink.database.connection().info.backend_pid
    with postgres_server.admin_connect() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    written = sink.write("users", [envelope("users", user(2))])
    assert [e.item["id"] for e in written] == [2]
    assert sink.database.connection().info.backend_pid != backend
    assert sink.count("users") == 2


deliveries = st.lists(
    st.tuples(st.integers(1, 3), st.integers(0, 5)),  # (key, version step)
    min_size=1,
    max_size=25,
)


@given(deliveries=deliveries, cuts=st.lists(st.integers(0, 25), max_size=6))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_delivery_order_ends_with_the_newest(
    sink: PostgresSink, deliveries: list[tuple[int, int]], cuts: list[int]
) -> None:
    """Versions arriving in any order, in any batches, re-delivered: the newest is stored."""
    sink.database.connection().execute("DELETE FROM tracks")
    items = [track(key, updated_at=version(step), name=f"{key}@{step}") for key, step in deliveries]
    bounds = sorted({0, len(items), *(cut for cut in cuts if cut < len(items))})
    stored: dict[int, int] = {}
    for start, stop in itertools.pairwise(bounds):
        batch = [envelope("tracks", item) for item in items[start:stop]]
        written = sink.write("tracks", batch)
        for written_envelope in written:  # each write stores only strictly newer versions
            key = written_envelope.item["id"]
            step = int(written_envelope.item["name"].split("@")[1])
            assert key not in stored or step > stored[key]
            stored[key] = step
    newest: dict[int, int] = {}
    for key, step in deliveries:
        newest[key] = max(step, newest.get(key, step))
    assert stored == newest
    assert {row["id"]: row["name"] for row in sink.rows("tracks")} == {
        key: f"{key}@{step}" for key, step in newest.items()
    }
    assert all(
        parse_timestamp(row["updated_at"]) == BASE + timedelta(seconds=newest[row["id"]])
        for row in sink.rows("tracks")
    )


def rows_snapshot(connection: psycopg.Connection) -> list[Any]:
    return [
        connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("users", "tracks", "listen_history", "listen_history_item")
    ]


def test_redelivering_a_whole_run_changes_nothing(
    sink: PostgresSink, postgres_credentials: Credentials
) -> None:
    batches = [
        ("users", [envelope("users", user(1)), envelope("users", user(2))]),
        ("tracks", [envelope("tracks", track(10)), envelope("tracks", track(11))]),
        ("listen_history", [envelope("listen_history", history(1, [10, 11]))]),
    ]
    for entity, batch in batches:
        sink.write(entity, batch)
    with connect(postgres_credentials) as connection:
        before = rows_snapshot(connection)
    for entity, batch in batches:
        assert sink.write(entity, batch) == []
    with connect(postgres_credentials) as connection:
        assert rows_snapshot(connection) == before


durations = st.one_of(
    st.from_regex(r"[0-9]{1,3}:[0-5][0-9]", fullmatch=True),
    st.from_regex(r"[0-9]{1,3}:[0-5][0-9]\n?", fullmatch=True),
    st.text(st.sampled_from("0123456789:\n\u0663\u0660\u096b"), max_size=7),  # + other digits
)


@given(duration=durations)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_every_duration_the_contract_accepts_is_stored(sink: PostgresSink, duration: str) -> None:
    """A value the contract lets through but the store refuses would block its shard."""
    try:
        item = envelope("tracks", track(1, duration=duration))
    except ValueError:
        return  # refused up front: quarantined by ingest, never reaches the store
    sink.database.connection().execute("DELETE FROM tracks")
    sink.write("tracks", [item])
    minutes, seconds = duration.split(":")
    assert sink.database.connection().execute("SELECT duration_s FROM tracks").fetchone() == (
        int(minutes) * 60 + int(seconds),
    )


def test_a_deadlock_is_retried_once_and_other_errors_are_not(sink: PostgresSink) -> None:
    calls: list[str] = []

    def deadlocks_once(connection: psycopg.Connection) -> str:
        calls.append("deadlock")
        connection.execute(
            "INSERT INTO tracks (id, is_placeholder) VALUES (%s, true)", (len(calls),)
        )
        if len(calls) == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "done"

    assert sink.database.run(deadlocks_once) == "done"
    assert calls == ["deadlock", "deadlock"]
    ids = sink.database.connection().execute("SELECT id FROM tracks").fetchall()
    assert ids == [(2,)]  # the first attempt was rolled back

    def always_fails(connection: psycopg.Connection) -> None:
        calls.append("check")
        raise psycopg.errors.CheckViolation("no")

    with pytest.raises(psycopg.errors.CheckViolation):
        sink.database.run(always_fails)
    assert calls.count("check") == 1
