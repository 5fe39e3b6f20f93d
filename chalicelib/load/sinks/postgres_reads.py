"""The PostgreSQL sink's reads: stored versions of keys (the reconciliation's key-by-key
check), a run's rows by page (its read-back), counts and whole tables (dumps and checks).
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from chalicelib.load.sinks.postgres_tables import TABLES, TIMESTAMP_FIELDS

ROWS = {
    "users": """
        SELECT id, first_name, last_name, email, gender, favorite_genres,
               created_at, updated_at, timestamps_as_served
        FROM users WHERE NOT is_placeholder ORDER BY id
    """,
    "tracks": """
        SELECT id, name, artist, songwriters, duration, genres, album,
               created_at, updated_at, timestamps_as_served
        FROM tracks WHERE NOT is_placeholder ORDER BY id
    """,
    "listen_history": """
        SELECT history.user_id,
               coalesce(array_agg(item.track_id ORDER BY item.position)
                        FILTER (WHERE item.position IS NOT NULL), '{}') AS items,
               history.created_at, history.updated_at, history.timestamps_as_served
        FROM listen_history AS history
        LEFT JOIN listen_history_item AS item USING (user_id, created_at)
        GROUP BY history.user_id, history.created_at
        ORDER BY history.user_id, history.created_at
    """,
}


def entity_key_of_stored(entity: str, key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The `entity_key` of a stored key (listen history: the canonical `created_at` text)."""
    if entity == "listen_history":
        return (key[0], key[1].isoformat(timespec="microseconds"))
    return key


def key_item(entity: str, key: Hashable) -> dict[str, Any]:
    """An item holding just the key fields of an `entity_key` tuple."""
    if not isinstance(key, tuple):
        raise TypeError(f"a key is an entity_key tuple, got {type(key).__name__}")
    if entity == "listen_history":
        return {"user_id": key[0], "created_at": key[1]}
    return {"id": key[0]}


VERSIONS = {
    "users": "SELECT t.id, t.updated_at, t.timestamps_as_served FROM {table} t "
    "WHERE t.id = ANY(%s::bigint[]) AND NOT t.is_placeholder",
    "tracks": "SELECT t.id, t.updated_at, t.timestamps_as_served FROM {table} t "
    "WHERE t.id = ANY(%s::bigint[]) AND NOT t.is_placeholder",
    "listen_history": "SELECT t.user_id, t.created_at, t.updated_at, t.timestamps_as_served "
    "FROM {table} t JOIN unnest(%s::bigint[], %s::timestamp[]) AS k(user_id, created_at) "
    "USING (user_id, created_at)",
}
"""Stored versions of a list of keys, one array parameter per key column."""

RUN_ROWS_CHUNK = 5000
"""Rows of a run read back per statement (keyset pages: memory stays one chunk)."""

RUN_ROWS = {
    entity: sql.SQL(
        "SELECT t.run_page, {key}, t.updated_at, t.timestamps_as_served FROM {table} t "
        "WHERE t.run_id = %(run)s AND t.run_page IS NOT NULL "
        "AND (t.run_page, {key}) > (%(page)s, {after}) ORDER BY t.run_page, {key} LIMIT {limit}"
    ).format(
        key=sql.SQL(", ").join(sql.Identifier("t", name) for name in table.key),
        table=sql.Identifier(table.name),
        after=sql.SQL(", ").join(sql.Placeholder(f"k{i}") for i in range(len(table.key))),
        limit=sql.Literal(RUN_ROWS_CHUNK),
    )
    for entity, table in TABLES.items()
}
"""The rows a run wrote, by `(run_page, key)` after a position: the `run_rows` index."""
KEY_FLOOR: dict[str, tuple[Any, ...]] = {
    "users": (-(2**63),),
    "tracks": (-(2**63),),
    "listen_history": (-(2**63), datetime.min),
}
"""A key below every stored key: where a run's read-back starts within its first page."""


COUNTS = {
    "users": "SELECT count(*) FROM users WHERE NOT is_placeholder",
    "tracks": "SELECT count(*) FROM tracks WHERE NOT is_placeholder",
    "listen_history": "SELECT count(*) FROM listen_history",
}


def row_to_item(cursor: psycopg.Cursor[Any], row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row in the API's shape and field order, timestamps as served."""
    names = [column.name for column in cursor.description or ()]
    values = dict(zip(names, row, strict=True))
    as_served: dict[str, str] = values.pop("timestamps_as_served") or {}
    for name in TIMESTAMP_FIELDS:
        values[name] = as_served.get(name) or values[name].isoformat()
    return values
