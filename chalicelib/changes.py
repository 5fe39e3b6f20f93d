"""Change detection: skip records whose exact content every sink has already stored.

The API has no `updated_since` filter, so every run reads every page; what it need not do is
publish and write again what did not change. Each DynamoDB row keeps `fp`, a fingerprint of the
content it stores, written in the same PutRequest as the row. Why that is enough, and safe:

* the load writes the DynamoDB sink **last**, and only when every sink before it succeeded for
  the batch (`chalicelib/load.py`). So a row holding fingerprint F means every sink processed
  content F: stored it, or kept a newer version. A record that failed (re-delivered) or was
  quarantined never gets its fingerprint stored, so the next run publishes it again;
* the ingest looks up the fingerprints of each page (BatchGetItem of 100 keys, projecting the
  key and `fp`) and skips an item whose fingerprint is stored. Skipping is equivalent to
  publishing: every sink's stored version only grows, so content it processed once would be a
  no-op now. The skipped item still goes into the run's page ledger, with its key and version:
  the reconciliation finds it stored, as it would have after publishing;
* the fingerprint covers the envelope schema version and the configured sink names as well as
  the item, so adding a sink (which has none of the old rows) changes every fingerprint, and the
  next run publishes everything once;
* a row rejected by newest-wins (an equal or older version) gets no new fingerprint; later
  runs offer it again and it is rejected again. That costs a write, never a record;
* look-ups are eventually consistent: a stale answer is an older fingerprint (or none), which
  makes the ingest publish a record it could have skipped, never the reverse.

Without the DynamoDB sink there is no row to keep the fingerprint: change detection is off and
every run publishes everything (`chalicelib/wiring.py`). Deleting rows from PostgreSQL by hand
requires a run with `PIPELINE_CHANGE_DETECTION=false` (which publishes everything) to restore
them.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from chalicelib.contract import SCHEMA_VERSION, entity_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

FINGERPRINT_ATTRIBUTE: Final = "fp"
GET_BATCH: Final = 100
"""BatchGetItem accepts at most 100 keys."""
MAX_ATTEMPTS: Final = 10

_KEY_NAMES: Final = {
    "users": ("id",),
    "tracks": ("id",),
    "listen_history": ("user_id", "created_at"),
}


class StateUnavailable(RuntimeError):
    """DynamoDB kept returning unprocessed keys; the page is retried as a whole."""


def fingerprint_salt(sinks: Sequence[str]) -> bytes:
    """What besides the item a fingerprint depends on: the envelope schema and the sinks."""
    return f"v{SCHEMA_VERSION}|{','.join(sorted(sinks))}|".encode()


def content_fingerprint(salt: bytes, entity: str, item: Mapping[str, Any]) -> bytes:
    """16 bytes that change whenever the item, the schema or the set of sinks changes."""
    content = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(salt + entity.encode() + b"|" + content, digest_size=16).digest()


class ChangeDetector:
    """Answers, for validated items of a page, which ones every sink already stored."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_prefix: str,
        sinks: Sequence[str],
        sleep: Any = time.sleep,
    ) -> None:
        self.client = client
        self.table_prefix = table_prefix
        self.sleep = sleep
        self._salt = fingerprint_salt(sinks)

    def fingerprint(self, entity: str, item: Mapping[str, Any]) -> bytes:
        return content_fingerprint(self._salt, entity, item)

    def unchanged(self, entity: str, items: Sequence[Mapping[str, Any]]) -> list[bool]:
        """For each item, whether its stored row carries exactly this content's fingerprint."""
        keys = [entity_key(entity, dict(item)) for item in items]
        stored = self._stored_fingerprints(entity, list(dict.fromkeys(keys)))
        return [
            key in stored and stored[key] == self._fingerprint_or_none(entity, item)
            for key, item in zip(keys, items, strict=True)
        ]

    def _fingerprint_or_none(self, entity: str, item: Mapping[str, Any]) -> bytes | None:
        """None for an item that cannot be serialized (a lone surrogate): it is "changed", and
        publishing it quarantines it with the reason."""
        try:
            return self.fingerprint(entity, item)
        except orjson.JSONEncodeError:
            return None

    def _stored_fingerprints(
        self, entity: str, keys: list[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], bytes]:
        table = f"{self.table_prefix}-{entity}"
        key_names = _KEY_NAMES[entity]
        names = {f"#k{index}": name for index, name in enumerate(key_names)}
        request_base: dict[str, Any] = {
            "ProjectionExpression": ", ".join([*names, FINGERPRINT_ATTRIBUTE]),
            "ExpressionAttributeNames": names,
        }
        found: dict[tuple[Any, ...], bytes] = {}
        for start in range(0, len(keys), GET_BATCH):
            pending: list[Any] = [
                {
                    name: {"N": str(part)} if isinstance(part, int) else {"S": str(part)}
                    for name, part in zip(key_names, key, strict=True)
                }
                for key in keys[start : start + GET_BATCH]
            ]
            for attempt in range(MAX_ATTEMPTS):
                if not pending:
                    break
                if attempt:
                    self.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))  # noqa: S311
                request: Any = {table: {**request_base, "Keys": pending}}
                response = self.client.batch_get_item(RequestItems=request)
                for row in response.get("Responses", {}).get(table, []):
                    if FINGERPRINT_ATTRIBUTE in row:
                        key = tuple(
                            int(row[name]["N"]) if "N" in row[name] else row[name]["S"]
                            for name in key_names
                        )
                        found[key] = bytes(row[FINGERPRINT_ATTRIBUTE]["B"])
                unprocessed = response.get("UnprocessedKeys", {}).get(table)
                pending = list(unprocessed["Keys"]) if unprocessed else []
            if pending:
                raise StateUnavailable(f"{len(pending)} keys still unread in {table}")
        return found
