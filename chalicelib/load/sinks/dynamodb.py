"""DynamoDB sink: PynamoDB models of the three resources and newest-wins batch writes.

Newest-wins is done as read-compare-write: one BatchGetItem fetches the stored versions of a
batch's keys, only newer versions are written with BatchWriteItem. This is safe because every
version of one entity travels on one shard (partition key `<entity>:<key>`) and a shard is
processed by one Lambda invocation at a time (ParallelizationFactor 1), so no other writer
races on the same key. It costs two calls per 25-100 records instead of one conditional
PutItem per record (measured in `python -m bench`: `dynamodb_write_strategies`).

The BatchWriteItem chunks of one batch hold distinct keys, so they are sent concurrently
(`PIPELINE_WRITE_CONCURRENCY` threads): a batch then costs about one round trip instead of
one per 25 records. The PynamoDB models define the rows and serialize them for every other
use; the hot-path calls (BatchGetItem, BatchWriteItem) build the wire format directly and go
through the process's shared boto3 client (`chalicelib.aws`): PynamoDB's generic
serialization and its client's parameter validation were a third of the load's CPU.

With change detection on, each row also keeps `fp`, the fingerprint of the content it stores
(`chalicelib/ingest/changes.py`), written in the same PutRequest as that content and never on its
own, so it always describes the row it is in; the load writes this sink after every other
one, so a row's `fp` means every sink processed that content.

Versions follow `chalicelib.model.contract.version_rank`: `updated_at`, then the later `fetched_at`
(a changed content with an equal `updated_at` is applied). A listen history's sort key is the
canonical instant of `created_at` (`canonical_instant`); the text as served is kept in
`created_at_served`, and `row_to_item` gives it back.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, ClassVar, Final

from pynamodb.attributes import BinaryAttribute, ListAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from chalicelib.aws import clients as aws
from chalicelib.aws.dynamo_batch import get_all, write_all
from chalicelib.load.evidence import RUN_ROWS_INDEX, page_number
from chalicelib.load.sinks import newest_per_key
from chalicelib.model.contract import (
    canonical_instant,
    fetch_rank,
    max_future,
    parse_timestamp,
    version_rank,
)
from chalicelib.model.envelope import Envelope
from chalicelib.model.fingerprint import (
    FINGERPRINT_ATTRIBUTE,
    content_fingerprint,
    fingerprint_salt,
)
from chalicelib.settings import Settings


class _Stored(Model):
    """Attributes every stored row carries: the version and where it came from."""

    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    run_id = UnicodeAttribute()
    fetched_at = UnicodeAttribute()
    fingerprint = BinaryAttribute(attr_name=FINGERPRINT_ATTRIBUTE, null=True, legacy_encoding=False)
    """Fingerprint of the stored content, when change detection is on (ingest/changes.py)."""
    run_page = NumberAttribute(null=True)
    """The page of `run_id` the row came from: the key of the `by_run` index the
    reconciliation reads a run's rows back from (chalicelib/load/evidence.py)."""

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
    """The canonical instant of `created_at` (UTC, microseconds): one row per instant."""
    created_at_served = UnicodeAttribute(null=True)
    """`created_at` as the API served it (rows written before the canonical key lack it)."""
    items = ListAttribute(of=NumberAttribute)

    fields = ("user_id", "items")


MAX_ITEM_BYTES: Final = 400_000
"""DynamoDB refuses items over 400 KB (409,600 bytes, attribute names included); a margin
below it, because moto already refuses at 405,000 and number sizes are estimated."""


def item_size(values: dict[str, Any]) -> int:
    """The size of an item as it will be encoded: UTF-8 names and strings, numbers by their
    digits (+1: DynamoDB stores about one byte per two digits plus one, moto counts the
    digits, so this is at least either), 3 bytes per list plus 1 per element."""
    return sum(len(name.encode()) + _value_size(value) for name, value in values.items())


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list):
        return 3 + sum(1 + _value_size(element) for element in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return len(str(value)) + 1
    return 21


ROW_MODELS: dict[str, type[_Stored]] = {
    "users": UserRow,
    "tracks": TrackRow,
    "listen_history": ListenHistoryRow,
}
_KEY_ATTRIBUTES = {"users": ["id"], "tracks": ["id"], "listen_history": ["user_id", "created_at"]}
WRITE_CHUNK: Final = 25
"""BatchWriteItem accepts at most 25 items."""
READ_CHUNK: Final = 100
"""BatchGetItem accepts at most 100 keys."""


_BINDINGS: dict[type[_Stored], tuple[str, str, str | None]] = {}
"""(table, region, endpoint) each model's cached connection was made for."""


def bind_models(settings: Settings) -> None:
    """Point the models at this stage's tables and the current endpoint and region.

    Dropping the cached connection makes PynamoDB build a new botocore client, which reads
    `AWS_ENDPOINT_URL` and the region from the environment as boto3 does. It is dropped only
    when the binding changed: a new client loads the DynamoDB service model (~0.4 s a model),
    and every sink built in a process (each reconciliation and dump) would pay it again.
    """
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    for entity, model in ROW_MODELS.items():
        binding = (settings.table_name(entity), region, endpoint)
        if _BINDINGS.get(model) == binding:
            continue
        model.Meta.table_name = settings.table_name(entity)
        model.Meta.region = region
        model._connection = None
        _BINDINGS[model] = binding


def row_values(entity: str, envelope: Envelope) -> dict[str, Any]:
    """Every attribute of the row that stores `envelope`."""
    values: dict[str, Any] = {name: envelope.item[name] for name in ROW_MODELS[entity].fields}
    values.update(
        created_at=envelope.item["created_at"],
        updated_at=envelope.item["updated_at"],
        run_id=envelope.run_id,
        fetched_at=envelope.fetched_at,
    )
    page = page_number(envelope.page)
    if page is not None:
        values["run_page"] = page
    if entity == "listen_history":
        values["created_at"] = canonical_instant(envelope.item["created_at"])
        values["created_at_served"] = envelope.item["created_at"]
    return values


def to_row(entity: str, envelope: Envelope, fingerprint: bytes | None = None) -> _Stored:
    return ROW_MODELS[entity](**row_values(entity, envelope), fingerprint=fingerprint)


def _wire(value: Any) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, int | list):
        return {"S": value}
    if isinstance(value, int):
        return {"N": str(value)}
    return {"L": [_wire(member) for member in value]}


def to_wire(entity: str, envelope: Envelope, fingerprint: bytes | None = None) -> dict[str, Any]:
    """`to_row(...).serialize()` built directly, for the hot path. Equality with PynamoDB's
    output is property-tested (tests/test_dynamodb_wire.py)."""
    wire = {name: _wire(value) for name, value in row_values(entity, envelope).items()}
    if fingerprint is not None:
        wire[FINGERPRINT_ATTRIBUTE] = {"B": fingerprint}
    return wire


def key_to_wire(entity: str, key: Sequence[Any]) -> dict[str, Any]:
    """The DynamoDB key of an `entity_key` tuple."""
    return {
        name: {"N": str(part)} if isinstance(part, int) else {"S": str(part)}
        for name, part in zip(_KEY_ATTRIBUTES[entity], key, strict=True)
    }


def key_from_wire(entity: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        int(row[name]["N"]) if "N" in row[name] else row[name]["S"]
        for name in _KEY_ATTRIBUTES[entity]
    )


def row_to_item(entity: str, row: _Stored) -> dict[str, Any]:
    """A stored row in the API's own shape: what the dumps and the tests compare."""
    item: dict[str, Any] = {name: getattr(row, name) for name in row.fields}
    item["created_at"] = getattr(row, "created_at_served", None) or row.created_at
    item["updated_at"] = row.updated_at
    for name in ("id", "user_id"):
        if name in item:
            item[name] = int(item[name])
    if "items" in item:
        item["items"] = [int(track_id) for track_id in item["items"]]
    return item


def _stored_rank(updated_at: str, fetched_at: str) -> tuple[datetime, datetime]:
    """`version_rank` of a stored row; a row without a readable `fetched_at` ranks first."""
    return (parse_timestamp(updated_at), fetch_rank(fetched_at))


class DynamoDBSink:
    """Newest-wins writes of validated envelopes into the PynamoDB tables."""

    name = "dynamodb"

    def __init__(self, settings: Settings) -> None:
        bind_models(settings)
        self._salt = fingerprint_salt(settings.sink_list) if settings.change_detection else None
        self._pool = ThreadPoolExecutor(
            max_workers=settings.write_concurrency, thread_name_prefix="dynamodb-sink"
        )

    def rejects(self, entity: str, envelope: Envelope) -> str | None:
        """A row over the item limit fails every BatchWriteItem it is in, forever."""
        size = item_size(row_values(entity, envelope))
        if size > MAX_ITEM_BYTES:
            return f"the row is {size} bytes, a DynamoDB item holds at most {MAX_ITEM_BYTES}"
        return None

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> list[Envelope]:
        candidates = newest_per_key(entity, envelopes)
        stored = self._stored(entity, list(candidates))
        newer: list[Envelope] = []
        not_after = max_future()
        for key, envelope in candidates.items():
            if key not in stored:
                newer.append(envelope)
                continue
            version, fetched_at, _ = stored[key]
            rank = _stored_rank(version, fetched_at)
            # a stored version from the future (stored before that was refused) never wins
            if rank[0] > not_after or version_rank(envelope) > rank:
                newer.append(envelope)
        rows: list[Any] = [
            to_wire(entity, envelope, self._fingerprint(entity, envelope)) for envelope in newer
        ]
        chunks = [rows[start : start + WRITE_CHUNK] for start in range(0, len(rows), WRITE_CHUNK)]
        # list() re-raises the first failure of any chunk: the whole group is then retried
        list(self._pool.map(lambda chunk: self._write_chunk(entity, chunk), chunks))
        return newer

    def _write_chunk(self, entity: str, rows: Sequence[dict[str, Any]]) -> None:
        """One BatchWriteItem of at most 25 rows, resending what DynamoDB left unprocessed."""
        requests = [{"PutRequest": {"Item": row}} for row in rows]
        write_all(aws.client("dynamodb"), ROW_MODELS[entity].Meta.table_name, requests)

    def _fingerprint(self, entity: str, envelope: Envelope) -> bytes | None:
        if self._salt is None:
            return None
        return content_fingerprint(self._salt, entity, envelope.item)

    def stored_versions(self, entity: str, keys: Sequence[Hashable]) -> dict[Hashable, str]:
        """`updated_at` stored for each of `keys` that exists (the reconciliation reads it)."""
        return {key: stored[0] for key, stored in self._stored(entity, list(keys)).items()}

    def _stored(
        self, entity: str, keys: list[Hashable]
    ) -> dict[Hashable, tuple[str, str, bytes | None]]:
        """(`updated_at`, `fetched_at`, fingerprint) stored for each of `keys` that exists.

        Keys are de-duplicated first: BatchGetItem refuses a list holding one key twice."""
        unique = list(dict.fromkeys(keys))
        chunks = [unique[start : start + READ_CHUNK] for start in range(0, len(unique), READ_CHUNK)]
        names = [*_KEY_ATTRIBUTES[entity], "updated_at", "fetched_at", FINGERPRINT_ATTRIBUTE]
        stored: dict[Hashable, tuple[str, str, bytes | None]] = {}
        for rows in self._pool.map(lambda chunk: self._read_chunk(entity, chunk, names), chunks):
            for row in rows:
                fingerprint = row.get(FINGERPRINT_ATTRIBUTE, {}).get("B")
                stored[key_from_wire(entity, row)] = (
                    row["updated_at"]["S"],
                    row.get("fetched_at", {}).get("S", ""),
                    None if fingerprint is None else bytes(fingerprint),
                )
        return stored

    def run_rows(
        self, entity: str, run_id: str, after_page: int = 0
    ) -> Iterator[tuple[int, tuple[Any, ...], str]]:
        """(page, key, `updated_at`) of every row `run_id` wrote and still holds, in page order,
        from the pages after `after_page`: Query pages of 1 MB on the `by_run` index.

        The index is eventually consistent: a row written a moment ago may be missing, which
        only sends its page to the key-by-key check."""
        read = [*_KEY_ATTRIBUTES[entity], "run_page", "updated_at"]
        names = {f"#a{number}": name for number, name in enumerate(read)}
        paginator = aws.client("dynamodb").get_paginator("query")
        for response in paginator.paginate(
            TableName=ROW_MODELS[entity].Meta.table_name,
            IndexName=RUN_ROWS_INDEX,
            KeyConditionExpression="run_id = :run AND run_page > :after",
            ExpressionAttributeValues={":run": {"S": run_id}, ":after": {"N": str(after_page)}},
            # not the run id the index also holds: every row has it, and parsing it is a
            # quarter of the client's time per row
            ProjectionExpression=", ".join(names),
            ExpressionAttributeNames=names,
        ):
            for row in response.get("Items", []):
                yield int(row["run_page"]["N"]), key_from_wire(entity, row), row["updated_at"]["S"]

    def stored_fingerprints(self, entity: str, keys: Sequence[Hashable]) -> dict[Hashable, bytes]:
        """The content fingerprint of each of `keys` whose row has one (change detection)."""
        return {
            key: fingerprint
            for key, (_, _, fingerprint) in self._stored(entity, list(keys)).items()
            if fingerprint is not None
        }

    @staticmethod
    def _read_chunk(
        entity: str, keys: Sequence[Any], projection: list[str] | None
    ) -> list[dict[str, Any]]:
        """Up to 100 rows (one BatchGetItem), only the `projection` attributes when given."""
        return get_all(
            aws.client("dynamodb"),
            ROW_MODELS[entity].Meta.table_name,
            [key_to_wire(entity, key) for key in keys],
            projection,
        )

    def count(self, entity: str) -> int:
        """Rows stored (a COUNT scan); for checks and the local cloud, not the hot path."""
        return ROW_MODELS[entity].count()

    def rows(self, entity: str) -> list[dict[str, Any]]:
        """Every stored row in the API's shape (scan); used by dumps and checks."""
        return [row_to_item(entity, row) for row in ROW_MODELS[entity].scan()]
