"""Foreign keys when resources arrive in any order: placeholders, then the real rows."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.load.sinks.postgres import PostgresSink
from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.model.envelope import Envelope
from tests.helpers.postgres_helpers import connect, envelope, history, make_sink, track, user

USERS = [user(1), user(2), user(3, updated_at="2025-02-01T00:00:00")]
TRACKS = [track(10), track(11, genres="jazz"), track(12), track(13)]
HISTORIES = [
    history(1, [10, 11, 10], created_at="2024-06-01T10:00:00.000001"),
    history(1, [12], created_at="2024-06-02T10:00:00.000002"),
    history(2, [13, 11], created_at="2024-06-01T10:00:00.000003"),
    history(3, [], created_at="2024-06-01T10:00:00.000004"),
]
DATASET: list[tuple[str, dict[str, Any]]] = [
    *(("users", item) for item in USERS),
    *(("tracks", item) for item in TRACKS),
    *(("listen_history", item) for item in HISTORIES),
]
# an older version of some rows, delivered too (they must lose whenever they arrive)
STALE: list[tuple[str, dict[str, Any]]] = [
    ("users", user(1, updated_at="2024-12-31T00:00:00", first_name="stale")),
    ("tracks", track(11, updated_at="2024-12-31T00:00:00", name="stale")),
    (
        "listen_history",
        history(
            2, [99, 98], created_at="2024-06-01T10:00:00.000003", updated_at="2024-12-31T00:00:00"
        ),
    ),
]


@pytest.fixture
def sink(postgres_credentials: Credentials) -> PostgresSink:
    return make_sink(postgres_credentials)


def foreign_keys(connection: psycopg.Connection) -> set[tuple[str, str, bool]]:
    rows = connection.execute(
        "SELECT conrelid::regclass::text, confrelid::regclass::text, convalidated "
        "FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
    ).fetchall()
    return {(child, parent, valid) for child, parent, valid in rows}


def orphans(connection: psycopg.Connection) -> int:
    """Rows whose referenced row is missing (what a violated foreign key would allow)."""
    row = connection.execute(
        """
        SELECT (SELECT count(*) FROM listen_history_item i
                 WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.id = i.track_id))
             + (SELECT count(*) FROM listen_history_item i
                 WHERE NOT EXISTS (SELECT 1 FROM listen_history h
                                    WHERE (h.user_id, h.created_at) = (i.user_id, i.created_at)))
             + (SELECT count(*) FROM listen_history h
                 WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = h.user_id))
        """
    ).fetchone()
    assert row is not None
    return int(row[0])


def placeholders(connection: psycopg.Connection) -> list[tuple[str, int]]:
    return [
        (entity, int(key))
        for entity, key in connection.execute(
            "SELECT entity, id FROM unresolved_references ORDER BY 1, 2"
        ).fetchall()
    ]


def test_the_schema_declares_valid_foreign_keys(
    sink: PostgresSink, postgres_credentials: Credentials
) -> None:
    sink.count("users")  # migrates
    with connect(postgres_credentials) as connection:
        assert foreign_keys(connection) == {
            ("listen_history", "users", True),
            ("listen_history_item", "tracks", True),
            ("listen_history_item", "listen_history", True),
        }
        connection.execute("INSERT INTO tracks (id, is_placeholder) VALUES (1, true)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):  # no such history
            connection.execute("INSERT INTO listen_history_item VALUES (1, '2024-01-01', 1, 1)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):  # no such user
            connection.execute(
                "INSERT INTO listen_history VALUES (1, now(), now(), null, 'r', 'f')"
            )


def test_a_history_before_its_user_and_tracks(
    sink: PostgresSink, postgres_credentials: Credentials
) -> None:
    sink.write("listen_history", [envelope("listen_history", HISTORIES[0])])
    with connect(postgres_credentials) as connection:
        assert placeholders(connection) == [("tracks", 10), ("tracks", 11), ("users", 1)]
        assert orphans(connection) == 0
    # placeholders are not stored rows: not counted, not dumped
    assert (sink.count("users"), sink.count("tracks")) == (0, 0)
    assert (sink.rows("users"), sink.rows("tracks")) == ([], [])
    assert sink.rows("listen_history") == [HISTORIES[0]]  # nothing lost while waiting

    written = sink.write("tracks", [envelope("tracks", item) for item in TRACKS[:2]])
    assert len(written) == 2  # a real row always replaces a placeholder
    sink.write("users", [envelope("users", USERS[0])])
    with connect(postgres_credentials) as connection:
        assert placeholders(connection) == []
        assert orphans(connection) == 0
    assert sink.rows("users") == [USERS[0]]
    assert sink.rows("tracks") == TRACKS[:2]


def test_placeholders_never_overwrite_loaded_rows(sink: PostgresSink) -> None:
    sink.write("tracks", [envelope("tracks", TRACKS[0])])
    sink.write("users", [envelope("users", USERS[0])])
    sink.write("listen_history", [envelope("listen_history", HISTORIES[0])])
    assert sink.rows("tracks") == [TRACKS[0]]
    assert sink.rows("users") == [USERS[0]]


EXPECTED: dict[str, list[dict[str, Any]]] = {
    "users": USERS,
    "tracks": TRACKS,
    "listen_history": sorted(HISTORIES, key=lambda h: (h["user_id"], h["created_at"])),
}
"""What the store must hold in the end, whatever the order: DATASET (STALE always loses)."""


def test_a_placeholder_only_a_stale_version_named_goes_away(
    sink: PostgresSink, postgres_credentials: Credentials
) -> None:
    stale = STALE[2][1]
    sink.write("listen_history", [envelope("listen_history", stale)])
    with connect(postgres_credentials) as connection:
        assert placeholders(connection) == [("tracks", 98), ("tracks", 99), ("users", 2)]
        sink.write("listen_history", [envelope("listen_history", HISTORIES[2])])
        assert placeholders(connection) == [("tracks", 11), ("tracks", 13), ("users", 2)]
        assert orphans(connection) == 0


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[str, list[Envelope]]]:
    """DATASET and STALE in a random order, some re-delivered, cut into per-entity batches."""
    deliveries = draw(st.permutations([*DATASET, *STALE]))
    repeats = draw(st.lists(st.sampled_from([*DATASET, *STALE]), max_size=5))
    deliveries = [*deliveries, *repeats]
    batches: list[tuple[str, list[Envelope]]] = []
    for entity, item in deliveries:
        if batches and batches[-1][0] == entity and draw(st.booleans()):
            batches[-1][1].append(envelope(entity, item))
        else:
            batches.append((entity, [envelope(entity, item)]))
    return batches


@given(batches=arrivals())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_arrival_order_ends_complete_with_keys_holding(
    sink: PostgresSink, batches: list[tuple[str, list[Envelope]]]
) -> None:
    connection = sink.database.connection()
    connection.execute("TRUNCATE users, tracks, listen_history, listen_history_item")
    for entity, batch in batches:
        sink.write(entity, batch)
        assert orphans(connection) == 0  # the keys hold at every step, not only at the end
        for row in sink.rows("listen_history"):  # and every stored history is whole
            expected = next(
                h["items"]
                for _, h in [*DATASET, *STALE]
                if (h.get("user_id"), h.get("created_at"), h.get("updated_at"))
                == (row["user_id"], row["created_at"], row["updated_at"])
            )
            assert row["items"] == expected
    assert placeholders(connection) == []
    for entity, expected in EXPECTED.items():
        assert sink.rows(entity) == expected
        assert sink.count(entity) == len(expected)
    assert foreign_keys(connection) == {
        ("listen_history", "users", True),
        ("listen_history_item", "tracks", True),
        ("listen_history_item", "listen_history", True),
    }


def test_concurrent_shards_leave_complete_rows(
    sink: PostgresSink, postgres_credentials: Credentials
) -> None:
    """Histories and the tracks they name, written at the same time by two consumers."""
    track_ids = list(range(100, 160))
    histories = [
        history(user_id, [track_ids[(user_id * 7 + k) % 60] for k in range(5)])
        for user_id in range(1, 41)
    ]
    work = {
        "listen_history": [envelope("listen_history", h) for h in histories],
        "tracks": [envelope("tracks", track(t)) for t in reversed(track_ids)],
        "users": [envelope("users", user(u)) for u in range(40, 0, -1)],
    }
    sink.count("users")  # migrate before the race
    failures: list[BaseException] = []

    def consume(entity: str) -> None:
        try:
            batch = work[entity]
            for start in range(0, len(batch), 7):
                sink.write(entity, batch[start : start + 7])
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=consume, args=(entity,)) for entity in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    with connect(postgres_credentials) as connection:
        assert placeholders(connection) == []
        assert orphans(connection) == 0
    assert sink.rows("listen_history") == sorted(histories, key=lambda h: h["user_id"])
    assert sink.count("tracks") == 60
    assert sink.count("users") == 40


def test_a_placeholder_named_concurrently_is_kept(
    sink: PostgresSink, postgres_credentials: Credentials
) -> None:
    """A drops a placeholder only its stale version named while B names it: B wins."""
    stale = history(5, [77], updated_at="2025-01-01T00:00:00")
    sink.write("listen_history", [envelope("listen_history", stale)])
    other = connect(postgres_credentials)
    other.autocommit = False  # B: names track 77 in a transaction still open
    other.execute("INSERT INTO users (id, is_placeholder) VALUES (6, true)")
    other.execute(
        "INSERT INTO listen_history VALUES (6, '2024-01-01', '2025-01-01', null, 'b', 'f')"
    )
    other.execute("INSERT INTO listen_history_item VALUES (6, '2024-01-01', 1, 77)")
    newer = history(5, [78], updated_at="2025-02-01T00:00:00")
    failures: list[BaseException] = []

    def write_newer() -> None:
        try:
            sink.write("listen_history", [envelope("listen_history", newer)])
        except BaseException as error:
            failures.append(error)

    writer = threading.Thread(target=write_newer)
    writer.start()
    with connect(postgres_credentials) as watcher:  # wait until A waits for B's lock
        for _ in range(600):
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            if waiting == (1,):
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the writer never waited for the open transaction")
    other.commit()
    other.close()
    writer.join(timeout=60)
    assert failures == []
    assert sink.rows("listen_history")[0] == newer
    with connect(postgres_credentials) as connection:
        assert ("tracks", 77) in placeholders(connection)  # still named by user 6's history
        assert orphans(connection) == 0
