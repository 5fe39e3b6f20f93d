"""Change detection: skip records whose exact content every sink has already stored.

The API has no `updated_since` filter, so every run reads every page; what it need not do is
publish and write again what did not change. Each DynamoDB row keeps `fp`, a fingerprint of the
content it stores, written in the same PutRequest as the row. Why that is enough, and safe:

* the load writes the DynamoDB sink **last**, and only when every sink before it succeeded for
  the batch (`chalicelib/load/consumer.py`).
  So a row holding fingerprint F means every sink processed
  content F: stored it, or kept a newer version. A record that failed (re-delivered) or was
  quarantined never gets its fingerprint stored, so the next run publishes it again;
* the ingest looks up the fingerprints of each page through the DynamoDB sink's own read
  (`DynamoDBSink.stored_fingerprints`: BatchGetItem of 100 keys, projecting the key, the
  version and `fp`) and skips an item whose fingerprint is stored. Skipping is equivalent to
  publishing: every sink's stored version only grows, so content it processed once would be a
  no-op now. The skipped item still goes into the run's page ledger, with its key and version:
  the reconciliation finds it stored, as it would have after publishing;
* the fingerprint covers the envelope schema version and the configured sink names as well as
  the item, so adding a sink (which has none of the old rows) changes every fingerprint, and the
  next run publishes everything once;
* the fingerprint is written in the same PutRequest as the content it describes, never on its
  own: a row's `fp` always describes that row's content. A record rejected by newest-wins (an
  older version, or the same record again) leaves the row and its `fp` as they are. A record
  whose content changed while its `updated_at` did not is changed (another fingerprint), so it
  is published, and the version rule applies it (the later fetch wins an equal `updated_at`,
  `chalicelib/model/contract.py`): rows stored without a fingerprint get theirs the same way;
* look-ups are eventually consistent: a stale answer is an older fingerprint (or none), which
  makes the ingest publish a record it could have skipped, never the reverse.

Without the DynamoDB sink there is no row to keep the fingerprint: change detection is off and
every run publishes everything (`chalicelib/wiring.py`). Deleting rows from PostgreSQL by hand
requires a run with `PIPELINE_CHANGE_DETECTION=false` (which publishes everything) to restore
them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import orjson

from chalicelib.model.contract import entity_key
from chalicelib.model.fingerprint import content_fingerprint, fingerprint_salt

FingerprintLookup = Callable[[str, Sequence[Hashable]], Mapping[Hashable, bytes]]
"""(entity, entity keys) -> the stored fingerprint of each key that has one."""


class ChangeDetector:
    """Answers, for validated items of a page, which ones every sink already stored."""

    def __init__(self, stored_fingerprints: FingerprintLookup, sinks: Sequence[str]) -> None:
        self.stored_fingerprints = stored_fingerprints
        self._salt = fingerprint_salt(sinks)

    def fingerprint(self, entity: str, item: Mapping[str, Any]) -> bytes:
        return content_fingerprint(self._salt, entity, item)

    def unchanged(self, entity: str, items: Sequence[Mapping[str, Any]]) -> list[bool]:
        """For each item, whether its stored row carries exactly this content's fingerprint."""
        keys = [entity_key(entity, dict(item)) for item in items]
        stored = self.stored_fingerprints(entity, list(dict.fromkeys(keys)))
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
