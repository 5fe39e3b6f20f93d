"""The floor: the same records through the same emulated services, with only the essential calls.

What the pipeline cannot do with fewer calls: read every page (sequential GETs), put every
record on the stream (PutRecords of 500), read it back (GetRecords, as many per call as the
pipeline's trigger hands its function), and store it (BatchWriteItem of 25; one PostgreSQL
COPY per entity when the PostgreSQL sink is configured). No validation, no newest-wins read,
no manifest, no change detection, no concurrency: the ratio pipeline/floor says what all of
those cost on top of the emulator's own speed.

The records are the same bytes as the pipeline's: the stream carries the same envelope
(`encode_envelope`, one orjson call) and DynamoDB the same row (the item plus the run id and
the fetch time), because the emulator's cost grows with the bytes it moves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import requests

from chalicelib import aws
from chalicelib.contract import partition_key
from chalicelib.settings import Settings
from chalicelib.stream import encode_envelope

FLOOR_RUN_ID: Final = "20000101T000000Z-f1007000"
PUT_BATCH: Final = 500
PUT_BYTES: Final = 5 * 1024 * 1024
WRITE_BATCH: Final = 25

FloorWriter = Callable[[Settings, str, list[dict[str, Any]]], None]
"""(settings, entity, items) -> None: stores one shard batch of items of one entity."""


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
    postgres_items: dict[str, list[dict[str, Any]]] = {}
    for items_by_entity in _consume(settings, batch_size):
        for entity, items in items_by_entity.items():
            for writer in writers:
                writer(settings, entity, items)
            if "postgres" in settings.sink_list:
                postgres_items.setdefault(entity, []).extend(items)
    for entity, items in postgres_items.items():
        copy_into_postgres(settings, entity, items)
    result.load_s = time.perf_counter() - started
    result.records = sum(result.by_entity.values())
    return result


def _pages(session: requests.Session, settings: Settings, resource: str) -> Iterator[list[Any]]:
    base = f"{str(settings.api_url).rstrip('/')}/{resource}"
    number = 1
    while True:
        body = orjson.loads(
            session.get(f"{base}?page={number}&size={settings.page_size}", timeout=30).content
        )
        if not body["items"]:
            return
        yield body["items"]
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

    for items in _pages(session, settings, resource):
        fetched_at = datetime.now(UTC).isoformat(timespec="microseconds")
        for item in items:
            data = encode_envelope(
                entity=resource, run_id=FLOOR_RUN_ID, fetched_at=fetched_at, item=item
            )
            record = {"Data": data, "PartitionKey": partition_key(resource, item)}
            record_size = len(record["Data"]) + len(record["PartitionKey"])
            if len(buffer) >= PUT_BATCH or size + record_size > PUT_BYTES:
                flush()
            buffer.append(record)
            size += record_size
            count += 1
    flush()
    return count


def _consume(settings: Settings, batch_size: int) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Read each shard from the start to its end; yields one batch's items per entity."""
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
            batch: dict[str, list[dict[str, Any]]] = {}
            for record in records:
                envelope = orjson.loads(record["Data"])
                row = {
                    **envelope["item"],
                    "run_id": envelope["run_id"],
                    "fetched_at": envelope["fetched_at"],
                }
                batch.setdefault(envelope["entity"], []).append(row)
            yield batch
            iterator = response["NextShardIterator"]


def _attribute(value: Any) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, int | list):
        return {"S": str(value)}
    if isinstance(value, int):
        return {"N": str(value)}
    return {"L": [_attribute(member) for member in value]}


def write_dynamodb(settings: Settings, entity: str, items: list[dict[str, Any]]) -> None:
    """BatchWriteItem of 25, retrying only what DynamoDB left unprocessed."""
    dynamodb = aws.client("dynamodb")
    table = settings.table_name(entity)
    for start in range(0, len(items), WRITE_BATCH):
        requests_: Any = [
            {"PutRequest": {"Item": {name: _attribute(value) for name, value in item.items()}}}
            for item in items[start : start + WRITE_BATCH]
        ]
        while requests_:
            response = dynamodb.batch_write_item(RequestItems={table: requests_})
            requests_ = response.get("UnprocessedItems", {}).get(table, [])


def copy_into_postgres(settings: Settings, entity: str, items: list[dict[str, Any]]) -> None:
    """One COPY of every item of an entity into a scratch table (PostgreSQL sink configured).

    Plug-in point for the PostgreSQL sink: `postgres_connection(settings)` must return a
    psycopg connection to the sink's database; until the sink exists the floor has none.
    """
    connection = postgres_connection(settings)
    with connection, connection.cursor() as cursor:
        table = f"floor_{entity}"
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (doc jsonb)")
        with cursor.copy(f"COPY {table} (doc) FROM STDIN") as copy:
            for item in items:
                copy.write_row([orjson.dumps(item).decode()])


def postgres_connection(settings: Settings) -> Any:
    """A psycopg connection to the PostgreSQL sink's database (from the sink's settings)."""
    dsn = getattr(settings, "postgres_dsn", None) or getattr(settings, "database_url", None)
    if not dsn:
        raise RuntimeError(
            "the PostgreSQL sink is configured but the floor found no DSN in the settings "
            "(postgres_dsn or database_url)"
        )
    import psycopg

    return psycopg.connect(str(dsn))


FLOOR_WRITERS: dict[str, FloorWriter] = {"dynamodb": write_dynamodb}
"""Per-batch floor writers by sink name; PostgreSQL is one COPY at the end (see above)."""
