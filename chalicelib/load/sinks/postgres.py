"""PostgreSQL sink: newest-wins batched upserts into the relational model of docs/schema.md.

One `write` call is one transaction and a handful of statements whatever the batch size: the
batch is `COPY`ed into a temporary staging table of the session, then merged with one
`INSERT ... SELECT ... ON CONFLICT ... DO UPDATE ... WHERE stored version < new version`,
which keeps the newest version. A version is `(updated_at, fetched_at_utc)`
(`chalicelib.model.contract.version_rank`): on an equal `updated_at` the later fetch wins, so a
changed content is applied; the same record again changes nothing, so re-delivery is a no-op.
`RETURNING` tells which envelopes were actually stored. The track ids of the histories go in
with one `COPY` too. Values never enter SQL text. `python -m bench` measures this against
the same upsert from `unnest`ed array parameters in one statement (`postgres_write_strategies`):
COPY was the faster at 100 and at 500 rows per batch (docs/performance.md).

Timestamps are stored as `timestamp`; they are served back with `isoformat()`, which
reproduces what the API serves (no fraction when the microseconds are zero). A timestamp
whose text isoformat() would not reproduce (another spelling, a zone) keeps its served text
in `timestamps_as_served`, so the dumps always show exactly what was served.

A listen history naming a user or track not loaded yet gets a placeholder row for it (see
docs/schema.md); a placeholder that no history names any more (a stale version named it) is
deleted. Rows are written in key order so concurrent writers lock in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from chalicelib.load.evidence import page_number
from chalicelib.load.sinks.postgres_connection import PostgresDatabase, database_for
from chalicelib.model.contract import fetch_rank, max_future, parse_timestamp, version_rank
from chalicelib.model.envelope import Envelope
from chalicelib.settings import Settings

StoredKey = tuple[int] | tuple[int, datetime]
TIMESTAMP_FIELDS = ("created_at", "updated_at")


@dataclass(frozen=True)
class Table:
    """How one entity maps to its table: key, API fields in served order, column types."""

    name: str
    key: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]  # (API field = column, PostgreSQL type), no timestamps
    has_placeholders: bool

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [
            *self.fields,
            ("created_at", "timestamp"),
            ("updated_at", "timestamp"),
            ("timestamps_as_served", "jsonb"),
            ("run_id", "text"),
            ("fetched_at", "text"),
            ("fetched_at_utc", "timestamp"),
            ("run_page", "integer"),
        ]


TABLES: dict[str, Table] = {
    "users": Table(
        "users",
        ("id",),
        (
            ("id", "bigint"),
            ("first_name", "text"),
            ("last_name", "text"),
            ("email", "text"),
            ("gender", "text"),
            ("favorite_genres", "text"),
        ),
        has_placeholders=True,
    ),
    "tracks": Table(
        "tracks",
        ("id",),
        (
            ("id", "bigint"),
            ("name", "text"),
            ("artist", "text"),
            ("songwriters", "text"),
            ("duration", "text"),
            ("genres", "text"),
            ("album", "text"),
        ),
        has_placeholders=True,
    ),
    "listen_history": Table(
        "listen_history",
        ("user_id", "created_at"),
        (("user_id", "bigint"),),
        has_placeholders=False,
    ),
}


def stored_key(entity: str, item: dict[str, Any]) -> StoredKey:
    """The primary key as the table holds it (a parsed `created_at` for listen history)."""
    if entity == "listen_history":
        return (item["user_id"], parse_timestamp(item["created_at"]))
    return (item["id"],)


def newest_per_stored_key(entity: str, envelopes: Sequence[Envelope]) -> dict[StoredKey, Envelope]:
    """The newest version (`version_rank`) of each stored key in a batch; on a full tie the
    first one stays.

    Keyed like the table (not like the served text), because one INSERT ... ON CONFLICT may
    not touch a row twice.
    """
    newest: dict[StoredKey, Envelope] = {}
    for envelope in envelopes:
        key = stored_key(entity, envelope.item)
        current = newest.get(key)
        if current is None or version_rank(envelope) > version_rank(current):
            newest[key] = envelope
    return dict(sorted(newest.items()))


def timestamps_as_served(item: dict[str, Any]) -> str | None:
    """JSON of the timestamps that isoformat() of their value would not reproduce, or None."""
    odd = {
        name: item[name]
        for name in TIMESTAMP_FIELDS
        if parse_timestamp(item[name]).isoformat() != item[name]
    }
    return orjson.dumps(odd).decode() if odd else None


def row_values(table: Table, envelope: Envelope) -> list[Any]:
    """The values of `table.columns` for one envelope."""
    item = envelope.item
    return [
        *(item[name] for name, _ in table.fields),
        parse_timestamp(item["created_at"]),
        parse_timestamp(item["updated_at"]),
        timestamps_as_served(item),
        envelope.run_id,
        envelope.fetched_at,
        _fetched_at_utc(envelope.fetched_at),
        page_number(envelope.page),
    ]


def _fetched_at_utc(fetched_at: str) -> datetime | None:
    """The `fetched_at_utc` column: the fetch instant, NULL when `fetched_at` is not one."""
    instant = fetch_rank(fetched_at)
    return None if instant == datetime.min else instant


def column_values(table: Table, envelopes: Sequence[Envelope]) -> list[list[Any]]:
    """One list per column of `table.columns` (the floor of `python -m bench` uses them)."""
    columns: list[list[Any]] = [[] for _ in table.columns]
    for envelope in envelopes:
        for column, value in zip(columns, row_values(table, envelope), strict=True):
            column.append(value)
    return columns


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


_WRITERS: dict[
    str, Callable[[psycopg.Connection, str, dict[StoredKey, Envelope]], list[Envelope]]
] = {
    "users": write_entities,
    "tracks": write_entities,
    "listen_history": write_listen_history,
}

_ROWS = {
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


def _entity_key_of_stored(entity: str, key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The `entity_key` of a stored key (listen history: the canonical `created_at` text)."""
    if entity == "listen_history":
        return (key[0], key[1].isoformat(timespec="microseconds"))
    return key


def _key_item(entity: str, key: Hashable) -> dict[str, Any]:
    """An item holding just the key fields of an `entity_key` tuple."""
    if not isinstance(key, tuple):
        raise TypeError(f"a key is an entity_key tuple, got {type(key).__name__}")
    if entity == "listen_history":
        return {"user_id": key[0], "created_at": key[1]}
    return {"id": key[0]}


_VERSIONS = {
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

_RUN_ROWS = {
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
_KEY_FLOOR: dict[str, tuple[Any, ...]] = {
    "users": (-(2**63),),
    "tracks": (-(2**63),),
    "listen_history": (-(2**63), datetime.min),
}
"""A key below every stored key: where a run's read-back starts within its first page."""


_COUNTS = {
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


class PostgresSink:
    """Newest-wins writes of validated envelopes into PostgreSQL, one transaction per call."""

    name = "postgres"

    def __init__(self, settings: Settings, database: PostgresDatabase | None = None) -> None:
        self.database = database or database_for(settings)

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> list[Envelope]:
        candidates = newest_per_stored_key(entity, envelopes)
        if not candidates:
            return []
        writer = _WRITERS[entity]
        return self.database.run(lambda connection: writer(connection, entity, candidates))

    def stored_versions(self, entity: str, keys: Sequence[Hashable]) -> dict[Hashable, str]:
        """`updated_at` as served for each of `keys` stored; the reconciliation reads it.

        Keys are `entity_key` tuples (the canonical `created_at` instant for listen history);
        the table holds parsed timestamps, so each key is looked up by its parsed form.
        """
        by_stored: dict[StoredKey, Hashable] = {
            stored_key(entity, _key_item(entity, key)): key for key in keys
        }
        table = TABLES[entity]

        def lookup(connection: psycopg.Connection) -> dict[Hashable, str]:
            versions: dict[Hashable, str] = {}
            stored = list(by_stored)
            for start in range(0, len(stored), 1000):
                chunk = stored[start : start + 1000]
                columns = [list(column) for column in zip(*chunk, strict=True)]
                statement = _VERSIONS[entity]
                for *key, updated_at, as_served in connection.execute(
                    sql.SQL(statement).format(table=sql.Identifier(table.name)), columns
                ):
                    text = (as_served or {}).get("updated_at") or updated_at.isoformat()
                    versions[by_stored[tuple(key)]] = text
            return versions

        return self.database.run(lookup) if by_stored else {}

    def run_rows(
        self, entity: str, run_id: str, after_page: int = 0
    ) -> Iterator[tuple[int, tuple[Any, ...], str]]:
        """(page, `entity_key`, `updated_at` as served) of every row `run_id` wrote and still
        holds, in page order, from the pages after `after_page`: one indexed statement per
        `RUN_ROWS_CHUNK` rows."""
        position: tuple[Any, ...] = (after_page, *_KEY_FLOOR[entity])
        while True:
            params: dict[str, Any] = {"run": run_id, "page": position[0]}
            params.update({f"k{i}": part for i, part in enumerate(position[1:])})

            def chunk(connection: psycopg.Connection, params: dict[str, Any] = params) -> list[Any]:
                return connection.execute(_RUN_ROWS[entity], params).fetchall()

            rows = self.database.run(chunk)
            for page, *key, updated_at, as_served in rows:
                text = (as_served or {}).get("updated_at") or updated_at.isoformat()
                yield page, _entity_key_of_stored(entity, tuple(key)), text
            if len(rows) < RUN_ROWS_CHUNK:
                return
            last = rows[-1]
            position = (last[0], *last[1 : 1 + len(TABLES[entity].key)])

    def count(self, entity: str) -> int:
        """Rows stored (placeholders are not stored rows: nothing was served for them yet)."""
        row = self.database.connection().execute(_COUNTS[entity]).fetchone()
        return int(row[0]) if row else 0

    def rows(self, entity: str) -> list[dict[str, Any]]:
        """Every stored row in the API's shape, sorted by key; used by dumps and checks."""
        with self.database.connection().cursor() as cursor:
            cursor.execute(_ROWS[entity])
            return [row_to_item(cursor, row) for row in cursor.fetchall()]
