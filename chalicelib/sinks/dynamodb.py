"""DynamoDB sink: PynamoDB models of the three resources and newest-wins batch writes.

Newest-wins is done as read-compare-write: one BatchGetItem fetches the stored versions of a
batch's keys, only newer versions are written with BatchWriteItem. This is safe because every
version of one entity travels on one shard (partition key `<entity>:<key>`) and a shard is
processed by one Lambda invocation at a time (ParallelizationFactor 1), so no other writer
races on the same key. It costs two calls per 25-100 records instead of one conditional
PutItem per record (measured in `python -m bench`: `dynamodb_write_strategies`).

The BatchWriteItem chunks of one batch hold distinct keys, so they are sent concurrently
(`PIPELINE_WRITE_CONCURRENCY` threads): a batch then costs about one round trip instead of
one per 25 records. The PynamoDB models define the rows and serialize them; the hot-path calls
(BatchGetItem, BatchWriteItem) go through the process's shared boto3 client
(`chalicelib.aws`), not through PynamoDB's per-thread connections, whose client validates
every parameter again: that was a sixth of the load function's CPU (docs/performance.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.models import Model

from chalicelib import aws
from chalicelib.changes import MAX_ATTEMPTS, content_fingerprint, fingerprint_salt
from chalicelib.contract import Envelope, parse_timestamp
from chalicelib.settings import Settings
from chalicelib.sinks import newest_per_key


class _Stored(Model):
    """Attributes every stored row carries: the version and where it came from."""

    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    run_id = UnicodeAttribute()
    fetched_at = UnicodeAttribute()
    fingerprint = BinaryAttribute(attr_name="fp", null=True, legacy_encoding=False)
    """Content fingerprint (chalicelib/changes.py): the change-detection state when
    DynamoDB is the only sink."""

    fields: ClassVar[tuple[str, ...]]


class UserRow(_Stored):
    class Meta:
        table_name = "users"

    id = NumberAttribute(hash_key=True)
    first_name = UnicodeAttribute()
    last_name = UnicodeAttribute()
    email = UnicodeAttribute()
    gender = UnicodeAttribute()
    favorite_genres = UnicodeAttribute()

    fields = ("id", "first_name", "last_name", "email", "gender", "favorite_genres")


class TrackRow(_Stored):
    class Meta:
        table_name = "tracks"

    id = NumberAttribute(hash_key=True)
    name = UnicodeAttribute()
    artist = UnicodeAttribute()
    songwriters = UnicodeAttribute()
    duration = UnicodeAttribute()
    genres = UnicodeAttribute()
    album = UnicodeAttribute()

    fields = ("id", "name", "artist", "songwriters", "duration", "genres", "album")


class ListenHistoryRow(_Stored):
    class Meta:
        table_name = "listen_history"

    user_id = NumberAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)
    items = ListAttribute(of=NumberAttribute)

    fields = ("user_id", "items")


ROW_MODELS: dict[str, type[_Stored]] = {
    "users": UserRow,
    "tracks": TrackRow,
    "listen_history": ListenHistoryRow,
}
_KEY_ATTRIBUTES = {"users": ["id"], "tracks": ["id"], "listen_history": ["user_id", "created_at"]}


def bind_models(settings: Settings) -> None:
    """Point the models at this stage's tables and the current endpoint and region.

    Dropping the cached connection makes PynamoDB build a new botocore client, which reads
    `AWS_ENDPOINT_URL` and the region from the environment as boto3 does.
    """
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    for entity, model in ROW_MODELS.items():
        model.Meta.table_name = settings.table_name(entity)
        model.Meta.region = region
        model._connection = None


def to_row(entity: str, envelope: Envelope, fingerprint: bytes | None = None) -> _Stored:
    model = ROW_MODELS[entity]
    values: dict[str, Any] = {name: envelope.item[name] for name in model.fields}
    return model(
        created_at=envelope.item["created_at"],
        updated_at=envelope.item["updated_at"],
        run_id=envelope.run_id,
        fetched_at=envelope.fetched_at,
        fingerprint=fingerprint,
        **values,
    )


def _wire(value: Any) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, int | list):
        return {"S": value}
    if isinstance(value, int):
        return {"N": str(value)}
    return {"L": [_wire(member) for member in value]}


def to_wire(entity: str, envelope: Envelope, fingerprint: bytes | None = None) -> dict[str, Any]:
    """`to_row(...).serialize()` built directly: the hot path skips PynamoDB's generic
    per-attribute serialization (a sixth of the load's CPU). Equality with PynamoDB's output
    is property-tested (tests/test_dynamodb_newest_wins.py)."""
    item = envelope.item
    wire = {name: _wire(item[name]) for name in ROW_MODELS[entity].fields}
    wire["created_at"] = {"S": item["created_at"]}
    wire["updated_at"] = {"S": item["updated_at"]}
    wire["run_id"] = {"S": envelope.run_id}
    wire["fetched_at"] = {"S": envelope.fetched_at}
    if fingerprint is not None:
        wire["fp"] = {"B": fingerprint}
    return wire


def row_to_item(entity: str, row: _Stored) -> dict[str, Any]:
    """A stored row in the API's own shape: what the dumps and the tests compare."""
    item: dict[str, Any] = {name: getattr(row, name) for name in row.fields}
    item["created_at"] = row.created_at
    item["updated_at"] = row.updated_at
    for name in ("id", "user_id"):
        if name in item:
            item[name] = int(item[name])
    if "items" in item:
        item["items"] = [int(track_id) for track_id in item["items"]]
    return item


class DynamoDBSink:
    """Newest-wins writes of validated envelopes into the PynamoDB tables."""

    name = "dynamodb"

    def __init__(self, settings: Settings) -> None:
        bind_models(settings)
        self._salt = fingerprint_salt(settings.sink_list) if settings.change_detection else None
        self._pool = ThreadPoolExecutor(
            max_workers=settings.write_concurrency, thread_name_prefix="dynamodb-sink"
        )

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> list[Envelope]:
        candidates = newest_per_key(entity, envelopes)
        stored = self._stored_versions(entity, list(candidates))
        newer = [
            envelope
            for key, envelope in candidates.items()
            if key not in stored
            or parse_timestamp(envelope.item["updated_at"]) > parse_timestamp(stored[key])
        ]
        chunks = [newer[start : start + 25] for start in range(0, len(newer), 25)]
        # list() re-raises the first failure of any chunk: the whole group is then retried
        list(self._pool.map(lambda chunk: self._write_chunk(entity, chunk), chunks))
        return newer

    def _write_chunk(self, entity: str, chunk: Sequence[Envelope]) -> None:
        """One BatchWriteItem of at most 25 rows, retrying what DynamoDB left unprocessed."""
        table = ROW_MODELS[entity].Meta.table_name
        pending: list[Any] = []
        for envelope in chunk:
            fingerprint = (
                None
                if self._salt is None
                else content_fingerprint(self._salt, entity, envelope.item)
            )
            pending.append({"PutRequest": {"Item": to_wire(entity, envelope, fingerprint)}})
        client = aws.client("dynamodb")
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                time.sleep(0.05 * 2**attempt)
            response = client.batch_write_item(RequestItems={table: pending})
            pending = list(response.get("UnprocessedItems", {}).get(table, []))
            if not pending:
                return
        raise RuntimeError(f"{len(pending)} rows still unprocessed by {table}")

    def _stored_versions(self, entity: str, keys: list[Hashable]) -> dict[Hashable, str]:
        lookup = [key[0] if len(key) == 1 else key for key in keys]  # type: ignore[index, arg-type]
        chunks = [lookup[start : start + 100] for start in range(0, len(lookup), 100)]
        versions: dict[Hashable, str] = {}
        for found in self._pool.map(lambda chunk: self._read_chunk(entity, chunk), chunks):
            versions.update(found)
        return versions

    @staticmethod
    def _read_chunk(entity: str, lookup: list[Any]) -> dict[Hashable, str]:
        """Stored `updated_at` of up to 100 keys (one BatchGetItem, unprocessed keys retried)."""
        table = ROW_MODELS[entity].Meta.table_name
        names = _KEY_ATTRIBUTES[entity]
        pending: list[Any] = [
            {
                name: {"N": str(part)} if isinstance(part, int) else {"S": str(part)}
                for name, part in zip(names, key if isinstance(key, tuple) else (key,), strict=True)
            }
            for key in lookup
        ]
        placeholders = {f"#a{index}": name for index, name in enumerate([*names, "updated_at"])}
        request = {
            "ProjectionExpression": ", ".join(placeholders),
            "ExpressionAttributeNames": placeholders,
        }
        client = aws.client("dynamodb")
        versions: dict[Hashable, str] = {}
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                time.sleep(0.05 * 2**attempt)
            response = client.batch_get_item(RequestItems={table: {**request, "Keys": pending}})
            for row in response.get("Responses", {}).get(table, []):
                key = tuple(
                    int(row[name]["N"]) if "N" in row[name] else row[name]["S"] for name in names
                )
                versions[key] = row["updated_at"]["S"]
            unprocessed = response.get("UnprocessedKeys", {}).get(table)
            pending = list(unprocessed["Keys"]) if unprocessed else []
            if not pending:
                return versions
        raise RuntimeError(f"{len(pending)} keys still unprocessed by {table}")

    def count(self, entity: str) -> int:
        """Rows stored (a COUNT scan); for checks and the local cloud, not the hot path."""
        return ROW_MODELS[entity].count()

    def rows(self, entity: str) -> list[dict[str, Any]]:
        """Every stored row in the API's shape (scan); used by dumps and checks."""
        return [row_to_item(entity, row) for row in ROW_MODELS[entity].scan()]
