"""Stores the load handler writes to. Each sink writes newest-wins and idempotently."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Protocol

from chalicelib.contract import Envelope, entity_key, version_of


class Sink(Protocol):
    """One store. `write` returns the envelopes it stored (new keys or newer versions)."""

    name: str

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> Sequence[Envelope]: ...

    def count(self, entity: str) -> int: ...

    def stored_versions(self, entity: str, keys: Sequence[Hashable]) -> Mapping[Hashable, str]:
        """The stored `updated_at` of each key that exists; keys are `entity_key` tuples.

        The reconciliation checks every fetched record against every sink with it.
        """
        ...


def newest_per_key(entity: str, envelopes: Iterable[Envelope]) -> dict[Hashable, Envelope]:
    """Collapse a batch to the newest version of each key; on a tie the first one stays.

    Keeping the first on ties makes re-delivery of an equal version a no-op, as in the store.
    """
    newest: dict[Hashable, Envelope] = {}
    for envelope in envelopes:
        key = entity_key(entity, envelope.item)
        current = newest.get(key)
        if current is None or version_of(envelope.item) > version_of(current.item):
            newest[key] = envelope
    return newest
