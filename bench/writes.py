"""Newest-wins write strategies of both sinks, measured: which one each sink uses.

DynamoDB, on the emulator:

* `read_compare_batch_write`: the sink's own strategy, one BatchGetItem per 100 keys, then
  BatchWriteItem of 25 for the newer versions only (safe because one shard has one consumer);
* `conditional_put`: one PutItem per record with a condition on the stored version, the usual
  way to keep newest-wins without reading first.

Both write the same number of distinct users (different keys, same table) in one local cloud.

PostgreSQL, on the embedded server, per load batch (one transaction each):

* `copy_staging_merge`: the sink's own strategy (`chalicelib/load/sinks/postgres.py`): `COPY` the
  batch into a temporary staging table, then one `INSERT ... SELECT FROM staging ... ON
  CONFLICT DO UPDATE ... WHERE older`;
* `unnest_upsert`: one statement, `INSERT ... SELECT FROM unnest(array parameters) ... ON
  CONFLICT DO UPDATE ... WHERE older` (one round trip instead of three).

Both write the same users through the same newest-wins condition and return the stored keys.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from chalicelib.load.sinks.dynamodb import DynamoDBSink, UserRow, to_row
from chalicelib.load.sinks.postgres import PostgresSink
from chalicelib.load.sinks.postgres_tables import TABLES, column_values, newest_per_stored_key
from chalicelib.model.contract import validate_item
from chalicelib.model.envelope import Envelope
from chalicelib.settings import Settings
from localcloud.fakeapi import generate_item


def _envelopes(start: int, count: int) -> list[Envelope]:
    items = (generate_item("users", index, 10 * (start + count), 0) for index in range(count))
    return [
        Envelope(
            entity="users",
            run_id="bench",
            fetched_at="2026-01-01T00:00:00+00:00",
            item=validate_item("users", {**item, "id": start + position}),
        )
        for position, item in enumerate(items)
    ]


def measure(settings: Settings, rows: int, batch: int = 500) -> dict[str, Any]:
    """Rows per second of each strategy on the current endpoint."""
    sink = DynamoDBSink(settings)
    envelopes = _envelopes(10_000_000, rows)
    started = time.perf_counter()
    for start in range(0, rows, batch):
        sink.write("users", envelopes[start : start + batch])
    batch_s = time.perf_counter() - started

    envelopes = _envelopes(20_000_000, rows)
    started = time.perf_counter()
    for envelope in envelopes:
        row = to_row("users", envelope)
        # PynamoDB's condition on the stored version; timestamps compare as strings here,
        # which is only right when every version prints the same fraction digits
        row.save(condition=UserRow.id.does_not_exist() | (UserRow.updated_at < row.updated_at))
    conditional_s = time.perf_counter() - started
    return {
        "rows": rows,
        "read_compare_batch_write": {
            "seconds": round(batch_s, 3),
            "rows_per_s": round(rows / batch_s, 1),
        },
        "conditional_put": {
            "seconds": round(conditional_s, 3),
            "rows_per_s": round(rows / conditional_s, 1),
        },
        "chosen": "read_compare_batch_write"
        if batch_s <= conditional_s
        else "conditional_put (change the sink!)",
    }


_FREE_IDS = itertools.count(30_000_000, 10_000_000)
"""First ids of fresh users for each measurement: every row written is a new key."""


def _unnest_upsert_statement() -> sql.Composed:
    """The users upsert from one array parameter per column, with the sink's newest-wins rule."""
    table = TABLES["users"]
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in table.columns)
    arrays = sql.SQL(", ").join(
        sql.SQL("%s::{}[]").format(sql.SQL("text" if kind == "jsonb" else kind))
        for _, kind in table.columns
    )
    selected = sql.SQL(", ").join(
        sql.SQL("incoming.{}::jsonb" if kind == "jsonb" else "incoming.{}").format(
            sql.Identifier(name)
        )
        for name, kind in table.columns
    )
    updates = sql.SQL(", ").join(
        [
            *(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(name))
                for name, _ in table.columns
                if name not in table.key
            ),
            sql.SQL("stored_at = now()"),
            sql.SQL("is_placeholder = false"),
        ]
    )
    return sql.SQL(
        "INSERT INTO users AS stored ({names}) SELECT {selected} FROM unnest({arrays}) "
        "AS incoming ({names}) ORDER BY id ON CONFLICT (id) DO UPDATE SET {updates} "
        "WHERE stored.is_placeholder OR stored.updated_at < excluded.updated_at "
        "RETURNING stored.id"
    ).format(names=names, selected=selected, arrays=arrays, updates=updates)


def _unnest_upsert(connection: psycopg.Connection, envelopes: Sequence[Envelope]) -> int:
    candidates = newest_per_stored_key("users", envelopes)
    columns = column_values(TABLES["users"], list(candidates.values()))
    return len(connection.execute(_unnest_upsert_statement(), columns).fetchall())


def measure_postgres(settings: Settings, rows: int, batch: int = 500) -> dict[str, Any]:
    """Rows per second of each PostgreSQL strategy, `batch` rows per transaction."""
    sink = PostgresSink(settings)
    sink.count("users")  # connects and migrates outside the measurement
    envelopes = _envelopes(next(_FREE_IDS), rows)
    started = time.perf_counter()
    stored = 0
    for start in range(0, rows, batch):
        stored += len(sink.write("users", envelopes[start : start + batch]))
    copy_s = time.perf_counter() - started

    envelopes = _envelopes(next(_FREE_IDS), rows)
    started = time.perf_counter()
    upserted = 0
    for start in range(0, rows, batch):
        chunk = envelopes[start : start + batch]

        def write(connection: psycopg.Connection, chunk: list[Envelope] = chunk) -> int:
            return _unnest_upsert(connection, chunk)

        upserted += sink.database.run(write)
    unnest_s = time.perf_counter() - started
    if stored != rows or upserted != rows:
        raise RuntimeError(f"a strategy did not store every row: {stored}, {upserted} of {rows}")
    return {
        "rows": rows,
        "batch": batch,
        "copy_staging_merge": {"seconds": round(copy_s, 3), "rows_per_s": round(rows / copy_s, 1)},
        "unnest_upsert": {"seconds": round(unnest_s, 3), "rows_per_s": round(rows / unnest_s, 1)},
        "chosen": (
            "copy_staging_merge" if copy_s <= unnest_s else "unnest_upsert (change the sink!)"
        ),
    }
