"""DynamoDB sink: PynamoDB models of the three resources and newest-wins batch writes.

Newest-wins is done as read-compare-write: one BatchGetItem fetches the stored versions of a
batch's keys, only newer versions are written with BatchWriteItem. This is safe because every
version of one entity travels on one shard (partition key `<entity>:<key>`) and a shard is
processed by one Lambda invocation at a time (ParallelizationFactor 1), so no other writer
races on the same key. It costs two calls per 25-100 records instead of one conditional
PutItem per record.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar, Final

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from chalicelib.contract import Envelope, parse_timestamp
from chalicelib.settings import Settings
from chalicelib.sinks import newest_per_key


class _Stored(Model):
    """Attributes every stored row carries: the version and where it came from."""

    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    run_id = UnicodeAttribute()
    fetched_at = UnicodeAttribute()

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


MAX_ITEM_BYTES: Final = 400_000
"""DynamoDB refuses items over 400 KB (409,600 bytes, attribute names included); a margin
below it, because moto already refuses at 405,000 and number sizes are estimated."""


def item_size(values: dict[str, Any]) -> int:
    """DynamoDB's size of an item: UTF-8 names and strings, numbers at their 21-byte maximum."""
    return sum(len(name.encode()) + _value_size(value) for name, value in values.items())


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, list):
        return 3 + sum(1 + _value_size(element) for element in value)
    return 21


ROW_MODELS: dict[str, type[_Stored]] = {
    "users": UserRow,
    "tracks": TrackRow,
    "listen_history": ListenHistoryRow,
}
_KEY_ATTRIBUTES = {"users": ["id"], "tracks": ["id"], "listen_history": ["user_id", "created_at"]}


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
    return values


def to_row(entity: str, envelope: Envelope) -> _Stored:
    return ROW_MODELS[entity](**row_values(entity, envelope))


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

    def rejects(self, entity: str, envelope: Envelope) -> str | None:
        """A row over the item limit fails every BatchWriteItem it is in, forever."""
        size = item_size(row_values(entity, envelope))
        if size > MAX_ITEM_BYTES:
            return f"the row is {size} bytes, a DynamoDB item holds at most {MAX_ITEM_BYTES}"
        return None

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> list[Envelope]:
        model = ROW_MODELS[entity]
        candidates = newest_per_key(entity, envelopes)
        stored = self._stored_versions(entity, list(candidates))
        newer = [
            envelope
            for key, envelope in candidates.items()
            if key not in stored
            or parse_timestamp(envelope.item["updated_at"]) > parse_timestamp(stored[key])
        ]
        with model.batch_write() as batch:
            for envelope in newer:
                batch.save(to_row(entity, envelope))
        return newer

    def stored_versions(self, entity: str, keys: Sequence[Hashable]) -> dict[Hashable, str]:
        """`updated_at` stored for each of `keys` that exists (the reconciliation reads it)."""
        return self._stored_versions(entity, list(keys))

    def _stored_versions(self, entity: str, keys: list[Hashable]) -> dict[Hashable, str]:
        model = ROW_MODELS[entity]
        lookup = [key[0] if len(key) == 1 else key for key in keys]  # type: ignore[index, arg-type]
        attributes = [*_KEY_ATTRIBUTES[entity], "updated_at"]
        versions: dict[Hashable, str] = {}
        for start in range(0, len(lookup), 100):
            for row in model.batch_get(lookup[start : start + 100], attributes_to_get=attributes):
                key = tuple(
                    int(value) if isinstance(value, float) else value
                    for value in (getattr(row, name) for name in _KEY_ATTRIBUTES[entity])
                )
                versions[key] = row.updated_at
        return versions

    def count(self, entity: str) -> int:
        """Rows stored (a COUNT scan); for checks and the local cloud, not the hot path."""
        return ROW_MODELS[entity].count()

    def rows(self, entity: str) -> list[dict[str, Any]]:
        """Every stored row in the API's shape (scan); used by dumps and checks."""
        return [row_to_item(entity, row) for row in ROW_MODELS[entity].scan()]
