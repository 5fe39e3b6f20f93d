"""Builders shared by the PostgreSQL tests: envelopes of valid items, connections, sinks."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from chalicelib.load.sinks.postgres import PostgresSink
from chalicelib.load.sinks.postgres_connection import (
    Credentials,
    PostgresDatabase,
    connection_factory,
)
from chalicelib.model.contract import validate_item
from chalicelib.model.envelope import Envelope
from chalicelib.settings import Settings

FETCHED_AT = "2025-07-15T12:00:00.000000+00:00"


def dsn(credentials: Credentials) -> str:
    return make_conninfo(
        host=credentials.host,
        port=credentials.port,
        user=credentials.username,
        password=credentials.password,
        dbname=credentials.dbname,
    )


def connect(credentials: Credentials) -> psycopg.Connection:
    return psycopg.connect(dsn(credentials), autocommit=True)


def make_sink(credentials: Credentials) -> PostgresSink:
    """A sink on its own handle (not the process registry), migrated on first use."""
    settings = Settings(postgres_dsn=dsn(credentials))
    return PostgresSink(settings, PostgresDatabase(connection_factory(settings)))


def envelope(entity: str, item: dict[str, Any], run_id: str = "run-1") -> Envelope:
    return Envelope(
        entity=entity,  # type: ignore[arg-type]
        run_id=run_id,
        fetched_at=FETCHED_AT,
        item=validate_item(entity, item),
    )


def user(
    user_id: int, updated_at: str = "2025-01-01T00:00:00.000001", **fields: Any
) -> dict[str, Any]:
    return {
        "id": user_id,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": f"user{user_id}@example.com",
        "gender": "Female",
        "favorite_genres": "Jazz",
        "created_at": "2024-01-01T00:00:00.500000",
        "updated_at": updated_at,
        **fields,
    }


def track(
    track_id: int, updated_at: str = "2025-01-01T00:00:00.000001", **fields: Any
) -> dict[str, Any]:
    return {
        "id": track_id,
        "name": f"song {track_id}",
        "artist": "Band",
        "songwriters": "Writer",
        "duration": "03:25",
        "genres": "rock",
        "album": "Album",
        "created_at": "2024-01-01T00:00:00.500000",
        "updated_at": updated_at,
        **fields,
    }


def history(
    user_id: int,
    items: list[int],
    created_at: str = "2024-06-01T10:00:00.000001",
    updated_at: str = "2025-01-01T00:00:00.000001",
) -> dict[str, Any]:
    return {"user_id": user_id, "items": items, "created_at": created_at, "updated_at": updated_at}


T1, T2, T3 = "2024-06-01T10:00:00", "2024-06-02T10:00:00", "2024-06-03T10:00:00"
U1, U2, U3 = "2025-01-01T00:00:00", "2025-01-02T00:00:00", "2025-01-03T00:00:00"


def load_known_dataset(sink: PostgresSink) -> None:
    """Users 1-3 (3 never listens), tracks 10-13 (13 never heard), three histories."""
    sink.write("users", [envelope("users", user(u, favorite_genres="Rock")) for u in (1, 2, 3)])
    sink.write(
        "tracks",
        [
            envelope("tracks", track(10, genres="rock", name="Ten")),
            envelope("tracks", track(11, genres="rock", name="Eleven")),
            envelope("tracks", track(12, genres="jazz", name="Twelve")),
            envelope("tracks", track(13, genres="pop", name="Thirteen")),
        ],
    )
    sink.write(
        "listen_history",
        [
            envelope("listen_history", history(1, [10, 11, 12], created_at=T1, updated_at=U1)),
            envelope("listen_history", history(1, [10, 10, 12], created_at=T2, updated_at=U2)),
            envelope("listen_history", history(2, [12, 11], created_at=T3, updated_at=U3)),
        ],
    )
