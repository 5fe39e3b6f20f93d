"""Change detection: skip records whose exact content every sink has already processed.

The API has no `updated_since` filter, so every run reads every page; what it need not do is
publish and write again what did not change. The state table `<prefix>-state` keeps, per
entity key (`<entity>:<key>`, the stream's partition key), a fingerprint of the last content
that **every sink has processed**: stored, or rejected by newest-wins because it held a newer
version. Who writes what, and why it is safe:

* the **load** side writes a key's fingerprint only after every sink's write of that batch
  succeeded. A record that failed (re-delivered) or was quarantined never gets one, so the
  next run publishes it again. Recording on the ingest side when publishing would be wrong:
  a record quarantined or stuck on the load side would be skipped for ever;
* the **ingest** side looks the fingerprints of each page up (BatchGetItem, 100 keys) and
  skips an item whose fingerprint is stored. Skipping it is equivalent to publishing it:
  a sink's stored version only ever grows, so content it processed once (stored or rejected)
  would be a no-op now;
* the fingerprint covers the schema version and the configured sink names as well as the
  item, so adding a sink (which has none of the old rows) changes every fingerprint and the
  next run publishes everything once;
* look-ups are eventually consistent: a stale answer can only be an older fingerprint, which
  makes the ingest publish a record it could have skipped, never the reverse.

Deleting rows from a sink by hand requires deleting the state table's items too (or a run
with `PIPELINE_CHANGE_DETECTION=false`, which neither reads nor writes the state).

When DynamoDB is the **only** sink, the state table would only repeat what its rows already
say, at the price of one more BatchWriteItem per 25 records (the bench measured it at a third
of the emulator's whole load-side time). `SinkRowChangeDetector` then keeps the fingerprint in
the DynamoDB row itself (attribute `fp`, written in the same PutRequest as the row), and the
ingest reads it from there: a row holding this fingerprint was stored with exactly this
content, which is "every sink processed it" when there is one sink. Records the sink rejects
as older get no fingerprint and are offered again by later runs; the sink rejects them again.
With several sinks the state table is used, and the fingerprint's salt (which names the sinks)
makes the first run after a change of sinks publish everything once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import orjson

from chalicelib.contract import SCHEMA_VERSION, Envelope, partition_key
from chalicelib.sinks import newest_per_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

GET_BATCH: Final = 100
"""BatchGetItem accepts at most 100 keys."""
WRITE_BATCH: Final = 25
"""BatchWriteItem accepts at most 25 items."""
MAX_ATTEMPTS: Final = 8


class StateUnavailable(RuntimeError):
    """The state table kept returning unprocessed keys or items; retry the whole unit."""


def fingerprint_salt(sinks: Sequence[str]) -> bytes:
    """What besides the item a fingerprint depends on: the envelope schema and the sinks."""
    return f"v{SCHEMA_VERSION}|{','.join(sorted(sinks))}|".encode()


def content_fingerprint(salt: bytes, entity: str, item: Mapping[str, Any]) -> bytes:
    """16 bytes that change whenever the item, the schema or the set of sinks changes."""
    content = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(salt + entity.encode() + b"|" + content, digest_size=16).digest()


class ChangeDetector:
    """Reads and writes the content fingerprints of the state table."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        sinks: Sequence[str],
        backoff_s: float = 0.05,
        concurrency: int = 4,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.backoff_s = backoff_s
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="state")
        self._salt = fingerprint_salt(sinks)

    def fingerprint(self, entity: str, item: Mapping[str, Any]) -> bytes:
        return content_fingerprint(self._salt, entity, item)

    # -- ingest side ---------------------------------------------------------------------------

    def unchanged(self, entity: str, items: Sequence[Mapping[str, Any]]) -> list[bool]:
        """For each item, whether every sink already processed exactly this content."""
        keys = [partition_key(entity, dict(item)) for item in items]
        stored = self._stored_fingerprints(entity, list(dict.fromkeys(keys)))
        return [
            stored.get(key) == self.fingerprint(entity, item)
            for key, item in zip(keys, items, strict=True)
        ]

    def _stored_fingerprints(self, entity: str, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), GET_BATCH):
            lookup = [{"pk": {"S": key}} for key in keys[start : start + GET_BATCH]]
            for row in self._batch_get(self.table_name, lookup, "pk, h", {}):
                found[row["pk"]["S"]] = bytes(row["h"]["B"])
        return found

    def _batch_get(
        self, table: str, keys: list[dict[str, Any]], projection: str, names: dict[str, str]
    ) -> list[dict[str, Any]]:
        """One BatchGetItem (<= 100 keys), retrying the keys DynamoDB left unprocessed."""
        rows: list[dict[str, Any]] = []
        pending: list[Any] = keys
        for attempt in range(MAX_ATTEMPTS):
            if not pending:
                return rows
            if attempt:
                time.sleep(self.backoff_s * 2**attempt)
            request: Any = {"Keys": pending, "ProjectionExpression": projection}
            if names:
                request["ExpressionAttributeNames"] = names
            response = self.client.batch_get_item(RequestItems={table: request})
            rows.extend(response.get("Responses", {}).get(table, []))
            unprocessed = response.get("UnprocessedKeys", {}).get(table)
            pending = list(unprocessed["Keys"]) if unprocessed else []
        if pending:
            raise StateUnavailable(f"{len(pending)} keys unread in {table}")
        return rows

    # -- load side -----------------------------------------------------------------------------

    def record(self, entity: str, envelopes: Sequence[Envelope]) -> int:
        """Remember the newest content of each key of a batch that every sink processed."""
        items = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": partition_key(entity, envelope.item)},
                        "h": {"B": self.fingerprint(entity, envelope.item)},
                        "updated_at": {"S": str(envelope.item["updated_at"])},
                        "run_id": {"S": envelope.run_id},
                    }
                }
            }
            for envelope in newest_per_key(entity, envelopes).values()
        ]
        chunks = [items[start : start + WRITE_BATCH] for start in range(0, len(items), WRITE_BATCH)]
        list(self._pool.map(self._write, chunks))  # concurrent; re-raises the first failure
        return len(items)

    def _write(self, requests: list[dict[str, Any]]) -> None:
        pending: list[Any] = requests
        for attempt in range(MAX_ATTEMPTS):
            if not pending:
                return
            if attempt:
                time.sleep(self.backoff_s * 2**attempt)
            response = self.client.batch_write_item(RequestItems={self.table_name: pending})
            pending = list(response.get("UnprocessedItems", {}).get(self.table_name, []))
        if pending:
            raise StateUnavailable(f"{len(pending)} state items unwritten in {self.table_name}")


class SinkRowChangeDetector(ChangeDetector):
    """Change detection when DynamoDB is the only sink: the fingerprint lives in its rows.

    The DynamoDB sink writes `fp` with every row (`chalicelib/sinks/dynamodb.py`); this reads
    it back from the entity tables, and `record` has nothing left to do.
    """

    def __init__(
        self, client: DynamoDBClient, table_prefix: str, sinks: Sequence[str], **kwargs: Any
    ) -> None:
        super().__init__(client, f"{table_prefix}-state", sinks, **kwargs)
        self.table_prefix = table_prefix

    def _stored_fingerprints(self, entity: str, keys: list[str]) -> dict[str, bytes]:
        table = f"{self.table_prefix}-{entity}"
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), GET_BATCH):
            lookup = [_row_key(entity, key) for key in keys[start : start + GET_BATCH]]
            names = {"#k0": "user_id", "#k1": "created_at"} if entity == "listen_history" else {}
            projection = "#k0, #k1, fp" if names else "id, fp"
            for row in self._batch_get(table, lookup, projection, names):
                if "fp" in row:
                    found[_row_partition_key(entity, row)] = bytes(row["fp"]["B"])
        return found

    def record(self, entity: str, envelopes: Sequence[Envelope]) -> int:
        return 0  # the sink wrote each row's fingerprint with the row


def _row_key(entity: str, key: str) -> dict[str, Any]:
    """DynamoDB key of a row from its partition key `<entity>:<id>` / `<entity>:<uid>:<ts>`."""
    parts = key.split(":", 2)
    if entity == "listen_history":
        return {"user_id": {"N": parts[1]}, "created_at": {"S": parts[2]}}
    return {"id": {"N": parts[1]}}


def _row_partition_key(entity: str, row: dict[str, Any]) -> str:
    if entity == "listen_history":
        return f"{entity}:{int(row['user_id']['N'])}:{row['created_at']['S']}"
    return f"{entity}:{int(row['id']['N'])}"
