"""Keys of records as the reconciliation sees them: a 64-bit digest of a fetched key (to tell
repeats apart in bounded memory) and the key a quarantined record still names."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from typing import Any

import orjson
from pydantic import ValidationError

from chalicelib.deadletter.quarantine import QuarantinedRecord
from chalicelib.model.contract import entity_key, validate_item
from chalicelib.model.envelope import decode_envelope


def key_digest(key: tuple[Any, ...]) -> int:
    """64 bits of a key: what the reconciler remembers of each fetched key of a run."""
    text = "\x1f".join(str(part) for part in key).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def key_of_envelope(entity: str, payload: bytes) -> Hashable | None:
    """The key of a quarantined stream record, when its payload still names one."""
    try:
        envelope = decode_envelope(payload)
    except ValueError:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        item = document.get("item") if isinstance(document, dict) else None
        if not isinstance(item, dict):
            return None
    else:
        item = envelope.item
    try:
        return entity_key(entity, validate_item(entity, item))
    except (ValidationError, KeyError):
        try:
            return entity_key(entity, item)
        except (KeyError, ValueError, TypeError):
            return None


def quarantined_record_key(record: QuarantinedRecord) -> Hashable | None:
    """Key of a quarantined load-side record (for redrive and reports)."""
    return key_of_envelope(record.entity, record.payload)
