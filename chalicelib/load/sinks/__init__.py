"""Stores the load handler writes to. Each sink writes newest-wins and idempotently."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from chalicelib.model.contract import entity_key, version_rank
from chalicelib.model.envelope import Envelope


class Sink(Protocol):
    """One store. `write` returns the envelopes it stored (new keys or newer versions).

    A sink with a hard per-record limit (DynamoDB's 400 KB item) may also define
    `rejects(entity, envelope) -> str | None`: why it can never store that record. The load
    quarantines such a record instead of reporting it failed, which would re-deliver it, and
    block its shard, forever. It is optional so that a sink without limits needs nothing.
    """

    name: str

    def write(self, entity: str, envelopes: Sequence[Envelope]) -> Sequence[Envelope]: ...

    def count(self, entity: str) -> int: ...

    def stored_versions(self, entity: str, keys: Sequence[Hashable]) -> Mapping[Hashable, str]:
        """The stored `updated_at` of each key that exists; keys are `entity_key` tuples.

        The reconciliation checks every fetched record against every sink with it.
        """
        ...


def rejection(sinks: Iterable[Sink], entity: str, envelope: Envelope) -> str | None:
    """Why one of `sinks` can never store `envelope` (the quarantine reason), or None."""
    for sink in sinks:
        rejects = getattr(sink, "rejects", None)
        reason = rejects(entity, envelope) if rejects is not None else None
        if reason:
            return f"the {sink.name} sink cannot store it: {reason}"
    return None


def newest_per_key(
    entity: str,
    envelopes: Iterable[Envelope],
    key_of: Callable[[str, dict[str, Any]], Hashable] = entity_key,
) -> dict[Hashable, Envelope]:
    """Collapse a batch to the newest version of each key (`key_of`, by default the entity
    key; `version_rank`: `updated_at`, then the later fetch); on a full tie the first one stays.

    Keeping the first on full ties makes re-delivery of a record a no-op, as in the store.
    """
    newest: dict[Hashable, Envelope] = {}
    for envelope in envelopes:
        key = key_of(entity, envelope.item)
        current = newest.get(key)
        if current is None or version_rank(envelope) > version_rank(current):
            newest[key] = envelope
    return newest
