"""Content fingerprints: what change detection compares, and what the DynamoDB sink stores.

A fingerprint covers the envelope schema version and the configured sink names as well as the
item, so adding a sink changes every fingerprint (why: `chalicelib/ingest/changes.py`). The
DynamoDB sink writes it in `FINGERPRINT_ATTRIBUTE` of the row it describes; the ingest's change
detector reads it back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from chalicelib.model.envelope import SCHEMA_VERSION

FINGERPRINT_ATTRIBUTE: Final = "fp"


def fingerprint_salt(sinks: Sequence[str]) -> bytes:
    """What besides the item a fingerprint depends on: the envelope schema and the sinks."""
    return f"v{SCHEMA_VERSION}|{','.join(sorted(sinks))}|".encode()


def content_fingerprint(salt: bytes, entity: str, item: Mapping[str, Any]) -> bytes:
    """16 bytes that change whenever the item, the schema or the set of sinks changes."""
    content = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(salt + entity.encode() + b"|" + content, digest_size=16).digest()
