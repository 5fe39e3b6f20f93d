"""PostgreSQL sink: newest-wins batched upserts into the relational model of docs/schema.md
(`postgres_tables`), written by `postgres_writes`, read back by `postgres_reads`.

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

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from chalicelib.load.sinks.postgres_connection import PostgresDatabase, database_for
from chalicelib.load.sinks.postgres_reads import (
    COUNTS,
    KEY_FLOOR,
    ROWS,
    RUN_ROWS,
    RUN_ROWS_CHUNK,
    VERSIONS,
    entity_key_of_stored,
    key_item,
    row_to_item,
)
from chalicelib.load.sinks.postgres_tables import (
    TABLES,
    StoredKey,
    newest_per_stored_key,
    stored_key,
)
from chalicelib.load.sinks.postgres_writes import WRITERS
from chalicelib.model.envelope import Envelope
from chalicelib.settings import Settings


class PostgresSink:
    """Newest-wins writes of validated envelopes into PostgreSQL, one transaction per call."""

    name = "postgres"

    def __init__(self, settings: Settings, database: PostgresDatabase | None = None) -> None:
        self.database = database or database_for(settings)

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> list[Envelope]:
        candidates = newest_per_stored_key(entity, envelopes)
        if not candidates:
            return []
        writer = WRITERS[entity]
        return self.database.run(lambda connection: writer(connection, entity, candidates))

    def stored_versions(self, entity: str, keys: Sequence[Hashable]) -> dict[Hashable, str]:
        """`updated_at` as served for each of `keys` stored; the reconciliation reads it.

        Keys are `entity_key` tuples (the canonical `created_at` instant for listen history);
        the table holds parsed timestamps, so each key is looked up by its parsed form.
        """
        by_stored: dict[StoredKey, Hashable] = {
            stored_key(entity, key_item(entity, key)): key for key in keys
        }
        table = TABLES[entity]

        def lookup(connection: psycopg.Connection) -> dict[Hashable, str]:
            versions: dict[Hashable, str] = {}
            stored = list(by_stored)
            for start in range(0, len(stored), 1000):
                chunk = stored[start : start + 1000]
                columns = [list(column) for column in zip(*chunk, strict=True)]
                statement = VERSIONS[entity]
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
        position: tuple[Any, ...] = (after_page, *KEY_FLOOR[entity])
        while True:
            params: dict[str, Any] = {"run": run_id, "page": position[0]}
            params.update({f"k{i}": part for i, part in enumerate(position[1:])})

            def chunk(connection: psycopg.Connection, params: dict[str, Any] = params) -> list[Any]:
                return connection.execute(RUN_ROWS[entity], params).fetchall()

            rows = self.database.run(chunk)
            for page, *key, updated_at, as_served in rows:
                text = (as_served or {}).get("updated_at") or updated_at.isoformat()
                yield page, entity_key_of_stored(entity, tuple(key)), text
            if len(rows) < RUN_ROWS_CHUNK:
                return
            last = rows[-1]
            position = (last[0], *last[1 : 1 + len(TABLES[entity].key)])

    def count(self, entity: str) -> int:
        """Rows stored (placeholders are not stored rows: nothing was served for them yet)."""
        row = self.database.connection().execute(COUNTS[entity]).fetchone()
        return int(row[0]) if row else 0

    def rows(self, entity: str) -> list[dict[str, Any]]:
        """Every stored row in the API's shape, sorted by key; used by dumps and checks."""
        with self.database.connection().cursor() as cursor:
            cursor.execute(ROWS[entity])
            return [row_to_item(cursor, row) for row in cursor.fetchall()]
