"""The recommender's views, checked row by row on a small dataset worked out by hand."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from chalicelib.load.sinks.postgres_connection import Credentials
from tests.helpers.postgres_helpers import (
    T1,
    T3,
    U1,
    U2,
    U3,
    connect,
    envelope,
    history,
    load_known_dataset,
    make_sink,
)


@pytest.fixture
def connection(postgres_credentials: Credentials) -> psycopg.Connection:
    load_known_dataset(make_sink(postgres_credentials))
    return connect(postgres_credentials)


def query(connection: psycopg.Connection, statement: str) -> list[tuple[Any, ...]]:
    return connection.execute(statement).fetchall()  # type: ignore[arg-type]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_user_track_interactions(connection: psycopg.Connection) -> None:
    assert query(
        connection, "SELECT * FROM user_track_interactions ORDER BY user_id, track_id"
    ) == [
        # user, track, listens, histories, first_seen_at, last_seen_at
        (1, 10, 3, 2, at(T1), at(U2)),
        (1, 11, 1, 1, at(T1), at(U1)),
        (1, 12, 2, 2, at(T1), at(U2)),
        (2, 11, 1, 1, at(T3), at(U3)),
        (2, 12, 1, 1, at(T3), at(U3)),
    ]


def test_track_popularity(connection: psycopg.Connection) -> None:
    assert query(
        connection,
        "SELECT track_id, name, genres, listens, listeners, popularity_rank "
        "FROM track_popularity ORDER BY popularity_rank, track_id",
    ) == [
        (12, "Twelve", "jazz", 3, 2, 1),
        (11, "Eleven", "rock", 2, 2, 2),
        (10, "Ten", "rock", 3, 1, 3),
        (13, "Thirteen", "pop", 0, 0, 4),
    ]


def test_user_genre_affinity(connection: psycopg.Connection) -> None:
    assert query(
        connection, "SELECT * FROM user_genre_affinity ORDER BY user_id, genre_rank, genre"
    ) == [
        (1, "rock", 4, Decimal("0.6667"), 1),
        (1, "jazz", 2, Decimal("0.3333"), 2),
        (2, "jazz", 1, Decimal("0.5000"), 1),
        (2, "rock", 1, Decimal("0.5000"), 1),
    ]


def test_user_listening_summary(connection: psycopg.Connection) -> None:
    assert query(connection, "SELECT * FROM user_listening_summary ORDER BY user_id") == [
        # user, favourite, histories, listens, distinct tracks, top genre, last active
        (1, "Rock", 2, 6, 3, "rock", at(U2)),
        (2, "Rock", 1, 2, 2, "jazz", at(U3)),  # a tie: the first genre by name
        (3, "Rock", 0, 0, 0, None, None),
    ]


def test_views_follow_a_newer_history(
    connection: psycopg.Connection, postgres_credentials: Credentials
) -> None:
    make_sink(postgres_credentials).write(
        "listen_history",
        [envelope("listen_history", history(2, [13], created_at=T3, updated_at=U3 + ".5"))],
    )
    assert query(
        connection, "SELECT track_id, listens FROM user_track_interactions WHERE user_id = 2"
    ) == [(13, 1)]
    assert query(connection, "SELECT * FROM unresolved_references") == []
