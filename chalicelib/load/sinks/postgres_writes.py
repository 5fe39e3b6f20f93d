"""The PostgreSQL sink's writes: a batch `COPY`ed into a staging table and merged newest-wins,
the items of listen histories replaced, placeholders for the users and tracks they name.

Rows are written in key order so concurrent writers lock in the same order. A placeholder that
no history names any more (a stale version named it) is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from chalicelib.load.sinks.postgres_tables import TABLES, StoredKey, Table, row_values
from chalicelib.model.contract import max_future
from chalicelib.model.envelope import Envelope


@dataclass(frozen=True)
class StagedUpsert:
    """The statements of one table's upsert through its staging table."""

    create: sql.Composed
    copy: sql.Composed
    merge: sql.Composed


def staged_upsert(table: Table) -> StagedUpsert:
    """`CREATE TEMP TABLE staging`, `COPY staging FROM STDIN`, then `INSERT ... SELECT FROM
    staging ON CONFLICT DO UPDATE WHERE older RETURNING key`.

    The staging table lives as long as the session and empties itself at every commit (and
    rollback), so a batch never sees another's rows.
    """
    staging = sql.Identifier(f"staging_{table.name}")
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in table.columns)
    updates: list[sql.Composable] = [
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(name))
        for name, _ in table.columns
        if name not in table.key
    ]
    updates.append(sql.SQL("stored_at = now()"))
    newer: sql.Composable = sql.SQL(
        "(stored.updated_at < excluded.updated_at OR (stored.updated_at = excluded.updated_at "
        "AND coalesce(stored.fetched_at_utc, '-infinity') "
        "< coalesce(excluded.fetched_at_utc, '-infinity')) "
        "OR stored.updated_at > {not_after})"
    ).format(not_after=sql.Placeholder("not_after"))
    if table.has_placeholders:  # a real row always replaces a placeholder
        updates.append(sql.SQL("is_placeholder = false"))
        newer = sql.SQL("stored.is_placeholder OR ") + newer
    key = sql.SQL(", ").join(map(sql.Identifier, table.key))
    return StagedUpsert(
        create=sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        ).format(staging=staging, table=sql.Identifier(table.name)),
        copy=sql.SQL("COPY {staging} ({names}) FROM STDIN").format(staging=staging, names=names),
        merge=sql.SQL(
            "INSERT INTO {table} AS stored ({names}) SELECT {names} FROM {staging} "
            "ORDER BY {key} ON CONFLICT ({key}) DO UPDATE SET {updates} WHERE {newer} "
            "RETURNING {returning}"
        ).format(
            table=sql.Identifier(table.name),
            names=names,
            staging=staging,
            key=key,
            updates=sql.SQL(", ").join(updates),
            newer=newer,
            returning=sql.SQL(", ").join(sql.Identifier("stored", name) for name in table.key),
        ),
    )


_UPSERTS = {entity: staged_upsert(table) for entity, table in TABLES.items()}


def upsert(
    connection: psycopg.Connection, entity: str, envelopes: Sequence[Envelope]
) -> list[tuple[Any, ...]]:
    """Stage the batch with COPY and merge it; returns the keys of the rows stored."""
    statements, table = _UPSERTS[entity], TABLES[entity]
    with connection.cursor() as cursor:
        cursor.execute(statements.create)
        with cursor.copy(statements.copy) as copy:
            for envelope in envelopes:
                copy.write_row(row_values(table, envelope))
        # a stored version from the future (stored before that was refused) never freezes a row
        cursor.execute(statements.merge, {"not_after": max_future()})
        return cursor.fetchall()


_ENSURE_PLACEHOLDERS = {
    table: sql.SQL(
        "INSERT INTO {table} (id, is_placeholder) "
        "SELECT DISTINCT referenced.id, true FROM unnest(%s::bigint[]) AS referenced (id) "
        "ORDER BY referenced.id ON CONFLICT (id) DO NOTHING"
    ).format(table=sql.Identifier(table))
    for table in ("users", "tracks")
}

_DELETE_ITEMS = sql.SQL(
    "DELETE FROM listen_history_item AS item USING unnest(%s::bigint[], %s::timestamp[]) "
    "AS replaced (user_id, created_at) "
    "WHERE item.user_id = replaced.user_id AND item.created_at = replaced.created_at "
    "RETURNING item.track_id"
)

_DROP_UNREFERENCED_PLACEHOLDERS = sql.SQL(
    "DELETE FROM tracks AS track USING unnest(%s::bigint[]) AS dropped (id) "
    "WHERE track.id = dropped.id AND track.is_placeholder "
    "AND NOT EXISTS (SELECT 1 FROM listen_history_item AS item WHERE item.track_id = track.id)"
)

_COPY_ITEMS = sql.SQL(
    "COPY listen_history_item (user_id, created_at, position, track_id) FROM STDIN"
)


def write_entities(
    connection: psycopg.Connection, entity: str, candidates: dict[StoredKey, Envelope]
) -> list[Envelope]:
    """Upsert users or tracks; return the envelopes stored (new keys or newer versions)."""
    return [candidates[(key,)] for (key,) in upsert(connection, entity, list(candidates.values()))]


def write_listen_history(
    connection: psycopg.Connection, entity: str, candidates: dict[StoredKey, Envelope]
) -> list[Envelope]:
    """Upsert histories, then replace the items of those stored, placeholders first."""
    envelopes = list(candidates.values())
    user_ids = [envelope.item["user_id"] for envelope in envelopes]
    connection.execute(_ENSURE_PLACEHOLDERS["users"], (user_ids,))
    keys: list[tuple[int, datetime]] = upsert(connection, entity, envelopes)
    if not keys:
        return []
    stored = [candidates[key] for key in keys]
    replaced = connection.execute(
        _DELETE_ITEMS, ([key[0] for key in keys], [key[1] for key in keys])
    ).fetchall()
    item_users: list[int] = []
    item_created: list[datetime] = []
    positions: list[int] = []
    track_ids: list[int] = []
    for (user_id, created_at), envelope in zip(keys, stored, strict=True):
        for position, track_id in enumerate(envelope.item["items"], start=1):
            item_users.append(user_id)
            item_created.append(created_at)
            positions.append(position)
            track_ids.append(track_id)
    if track_ids:
        connection.execute(_ENSURE_PLACEHOLDERS["tracks"], (track_ids,))
        with connection.cursor() as cursor, cursor.copy(_COPY_ITEMS) as copy:
            for row in zip(item_users, item_created, positions, track_ids, strict=True):
                copy.write_row(row)
    # A stale version may have named tracks the newer one does not: their placeholders go.
    no_longer_named = sorted({track_id for (track_id,) in replaced} - set(track_ids))
    if no_longer_named:
        try:
            with connection.transaction():  # a savepoint
                connection.execute(_DROP_UNREFERENCED_PLACEHOLDERS, (no_longer_named,))
        except psycopg.errors.ForeignKeyViolation:
            pass  # a concurrent history just named one of them: it stays, as it should
    return stored


WRITERS: dict[
    str, Callable[[psycopg.Connection, str, dict[StoredKey, Envelope]], list[Envelope]]
] = {
    "users": write_entities,
    "tracks": write_entities,
    "listen_history": write_listen_history,
}
