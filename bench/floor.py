"""The floor: the same records through the same emulated services, with only the essential calls.

What the pipeline cannot do with fewer calls: read every page (sequential GETs), put every
record on the stream (PutRecords of 500), read it back (GetRecords, as many per call as the
pipeline's trigger hands its function), and store it (BatchWriteItem of 25; one PostgreSQL
COPY per entity into the local cloud's embedded PostgreSQL when the PostgreSQL sink is
configured). No validation, no newest-wins read, no manifest, no change detection, no
concurrency: the ratio pipeline/floor says what all of those cost on top of the emulator's
own speed.

The records are the same bytes as the pipeline's: the stream carries the same envelope
(`encode_envelope`, with the page reference the ingest adds), DynamoDB the same row (the
sink's `to_wire`, with the content fingerprint `fp` that change detection stores;
tests/test_bench.py checks it against PynamoDB's serialization of the sink's model), and
PostgreSQL the same columns (the sink's `TABLES`), because the emulator's and the database's
costs grow with the bytes they move.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import orjson
import psycopg
import requests
from psycopg import sql

from chalicelib.aws import clients as aws
from chalicelib.aws.dynamo_batch import write_all
from chalicelib.load.sinks.dynamodb import to_wire
from chalicelib.load.sinks.postgres_connection import connection_factory
from chalicelib.load.sinks.postgres_tables import TABLES, row_values
from chalicelib.model.contract import partition_key
from chalicelib.model.envelope import Envelope, encode_envelope, page_id
from chalicelib.model.fingerprint import content_fingerprint, fingerprint_salt
from chalicelib.settings import Settings

FLOOR_RUN_ID: Final = "20000101T000000Z-f1007000"
PUT_BATCH: Final = 500
PUT_BYTES: Final = 5 * 1024 * 1024
WRITE_BATCH: Final = 25

FloorWriter = Callable[[Settings, str, list[Envelope]], None]
"""(settings, entity, envelopes) -> None: stores one shard batch of envelopes of one entity."""


@dataclass
class FloorResult:
    records: int = 0
    ingest_s: float = 0.0
    load_s: float = 0.0
    by_entity: dict[str, int] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.ingest_s + self.load_s

    @property
    def records_per_s(self) -> float:
        return self.records / self.total_s if self.total_s else 0.0


def run_floor(settings: Settings, batch_size: int) -> FloorResult:
    """Push every record of every resource through the stream into the stores, sequentially."""
    result = FloorResult()
    started = time.perf_counter()
    with requests.Session() as session:
        for resource in settings.resource_list:
            result.by_entity[resource] = _publish(session, settings, resource)
    result.ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    writers = [FLOOR_WRITERS[name] for name in settings.sink_list if name in FLOOR_WRITERS]
    with contextlib.ExitStack() as stack:
        copies = (
            stack.enter_context(PostgresCopies(settings))
            if "postgres" in settings.sink_list
            else None
        )
        for envelopes_by_entity in _consume(settings, batch_size):
            for entity, envelopes in envelopes_by_entity.items():
                for writer in writers:
                    writer(settings, entity, envelopes)
                if copies is not None:
                    copies.write(entity, envelopes)
    result.load_s = time.perf_counter() - started
    result.records = sum(result.by_entity.values())
    return result


def _pages(
    session: requests.Session, settings: Settings, resource: str
) -> Iterator[tuple[int, list[Any]]]:
    base = f"{str(settings.api_url).rstrip('/')}/{resource}"
    number = 1
    while True:
        body = orjson.loads(
            session.get(f"{base}?page={number}&size={settings.page_size}", timeout=30).content
        )
        if not body["items"]:
            return
        yield number, body["items"]
        if number >= body["pages"]:
            return
        number += 1


def _publish(session: requests.Session, settings: Settings, resource: str) -> int:
    kinesis = aws.client("kinesis")
    buffer: list[dict[str, Any]] = []
    size = 0
    count = 0

    def flush() -> None:
        nonlocal buffer, size
        if buffer:
            response = kinesis.put_records(StreamName=settings.stream_name, Records=buffer)
            if response.get("FailedRecordCount"):
                raise RuntimeError(f"floor: {response['FailedRecordCount']} records not put")
        buffer, size = [], 0

    for number, items in _pages(session, settings, resource):
        fetched_at = datetime.now(UTC).isoformat(timespec="microseconds")
        page = page_id(FLOOR_RUN_ID, resource, number)
        for item in items:
            data = encode_envelope(
                entity=resource, run_id=FLOOR_RUN_ID, fetched_at=fetched_at, item=item, page=page
            )
            record = {"Data": data, "PartitionKey": partition_key(resource, item)}
            record_size = len(data) + len(record["PartitionKey"])
            if len(buffer) >= PUT_BATCH or size + record_size > PUT_BYTES:
                flush()
            buffer.append(record)
            size += record_size
            count += 1
    flush()
    return count


def _consume(settings: Settings, batch_size: int) -> Iterator[dict[str, list[Envelope]]]:
    """Read each shard from the start to its end; yields one batch's envelopes per entity.

    The envelopes are built without validation (`model_construct`): the floor trusts them.
    """
    kinesis = aws.client("kinesis")
    for shard in kinesis.list_shards(StreamName=settings.stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=settings.stream_name,
            ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        while True:
            response = kinesis.get_records(ShardIterator=iterator, Limit=batch_size)
            records = response["Records"]
            if not records:
                break
            batch: dict[str, list[Envelope]] = {}
            for record in records:
                envelope = Envelope.model_construct(**orjson.loads(record["Data"]))
                batch.setdefault(envelope.entity, []).append(envelope)
            yield batch
            iterator = response["NextShardIterator"]


def dynamodb_item(entity: str, envelope: Envelope, salt: bytes | None) -> dict[str, Any]:
    """The DynamoDB item the sink stores for `envelope`: the same attributes, and the content
    fingerprint `fp` when change detection is on (`salt`), so the same bytes."""
    fingerprint = None if salt is None else content_fingerprint(salt, entity, envelope.item)
    return to_wire(entity, envelope, fingerprint)


def write_dynamodb(settings: Settings, entity: str, envelopes: list[Envelope]) -> None:
    """BatchWriteItem of 25, retrying only what DynamoDB left unprocessed."""
    dynamodb = aws.client("dynamodb")
    table = settings.table_name(entity)
    salt = fingerprint_salt(settings.sink_list) if settings.change_detection else None
    for start in range(0, len(envelopes), WRITE_BATCH):
        requests_: Any = [
            {"PutRequest": {"Item": dynamodb_item(entity, envelope, salt)}}
            for envelope in envelopes[start : start + WRITE_BATCH]
        ]
        write_all(dynamodb, table, requests_)


def floor_table(entity: str) -> str:
    return f"floor_{entity}"


def postgres_columns(entity: str) -> list[tuple[str, str]]:
    """(column, type) of the floor's table: the sink's columns, and the history's track ids,
    which the sink writes as rows of `listen_history_item` (here one array column)."""
    columns = list(TABLES[entity].columns)
    if entity == "listen_history":
        columns.append(("items", "bigint[]"))
    return columns


def postgres_row(entity: str, envelope: Envelope) -> list[Any]:
    """The values the PostgreSQL sink stores for `envelope`, in `postgres_columns` order."""
    row = row_values(TABLES[entity], envelope)
    if entity == "listen_history":
        row.append(envelope.item["items"])
    return row


class PostgresCopies:
    """One `COPY ... FROM STDIN` per entity into the local cloud's PostgreSQL, kept open while
    the shards are read, so rows stream through instead of piling up in memory.

    It connects like the sink does (the credentials in Secrets Manager that the local cloud
    stored, `PIPELINE_POSTGRES_SECRET_ARN`) and writes plain tables `floor_<entity>` (the
    sink's columns, no constraints) in the sink's database.
    """

    def __init__(self, settings: Settings) -> None:
        self._connect = connection_factory(settings)
        self._stack = contextlib.ExitStack()
        self._copies: dict[str, Any] = {}

    def __enter__(self) -> PostgresCopies:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)  # ends every COPY (commits it), then closes

    def _open(self, entity: str) -> Any:
        connection: psycopg.Connection = self._stack.enter_context(self._connect(False))
        # one COPY spans the whole floor run (minutes at 100k): longer than the per-statement
        # limit the sink's connections carry
        connection.execute("SET statement_timeout = 0")
        table = sql.Identifier(floor_table(entity))
        columns = postgres_columns(entity)
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        connection.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                table,
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
                    for name, kind in columns
                ),
            )
        )
        cursor = self._stack.enter_context(connection.cursor())
        copy = self._stack.enter_context(
            cursor.copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(
                    table, sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
                )
            )
        )
        copy.set_types([kind for _, kind in columns])
        return copy

    def write(self, entity: str, envelopes: list[Envelope]) -> None:
        copy = self._copies.get(entity)
        if copy is None:
            copy = self._copies[entity] = self._open(entity)
        for envelope in envelopes:
            copy.write_row(postgres_row(entity, envelope))


def postgres_row_counts(settings: Settings) -> dict[str, int]:
    """Rows in each floor table (checks that the COPYs landed; not timed)."""
    counts: dict[str, int] = {}
    with connection_factory(settings)(False) as connection:
        for entity in settings.resource_list:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(floor_table(entity)))
            row = connection.execute(query).fetchone()
            counts[entity] = int(row[0]) if row else 0
    return counts


FLOOR_WRITERS: dict[str, FloorWriter] = {"dynamodb": write_dynamodb}
"""Per-batch floor writers by sink name; PostgreSQL streams through `PostgresCopies`."""
