"""The key-by-key check of a ledger page that does not balance: every sink asked for the
version it stores of each of the page's keys.

The slow path of the reconciliation (`chalicelib.reconcile.verdict`), taken only for a page whose
read-back and evidence do not account for every record (a row deleted or made older behind the
pipeline's back, a row a later run overwrote, evidence that could not be written, a redriven
record). It names what is lost: `<entity>:<key>@<version> (not in <sinks>)`, or the page and
position of a record quarantined at ingest that the quarantine no longer holds.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from chalicelib.deadletter.quarantine import Quarantine
from chalicelib.model.contract import parse_timestamp
from chalicelib.reconcile.balance import EntityBalance
from chalicelib.reconcile.page_settling import QuarantineIndex
from chalicelib.reconcile.record_keys import key_digest, key_of_envelope
from chalicelib.runs.page_ledger import PageLedger

LOOKUP_CHUNK: Final = 100
"""Keys looked up in the sinks at once (one BatchGetItem)."""
MISSING_SAMPLES: Final = 20
"""Missing records named per entity in the manifest and the report."""


class VersionedSink(Protocol):
    """A sink that can say which version of each key it stores (every sink of the pipeline)."""

    name: str

    def stored_versions(self, entity: str, keys: Sequence[Hashable]) -> Mapping[Hashable, str]: ...


@dataclass
class _Pending:
    """A fetched record waiting for its sink lookup."""

    key: tuple[Any, ...]
    version: str
    origin: str


def check_page_by_key(
    page: PageLedger,
    balance: EntityBalance,
    index: QuarantineIndex,
    sinks: Sequence[VersionedSink],
    seen: set[int],
) -> None:
    """Count a page into `balance` by asking every sink for each of its keys; `seen` holds the
    digests of the keys the run had before (a repeat is superseded, not stored twice)."""
    items = list(_fetched(page, balance, index))
    for start in range(0, len(items), LOOKUP_CHUNK):
        _check(page.resource, items[start : start + LOOKUP_CHUNK], balance, index, sinks, seen)


def _fetched(
    page: PageLedger, balance: EntityBalance, index: QuarantineIndex
) -> Iterable[_Pending]:
    """Count a page's records; yield those to look up in the sinks."""
    for position, key, version in page.entries:
        balance.fetched += 1
        origin = f"ingest-p{page.number}-i{position}"
        if key is not None and version is not None:
            yield _Pending(tuple(key), version, origin)
        elif origin in index.ingest_origins:
            balance.quarantined += 1
        elif origin in index.redriven:
            redriven_key, redriven_version = index.redriven[origin]
            yield _Pending(tuple(redriven_key), redriven_version, origin)  # type: ignore[arg-type]
        else:
            _missing(balance, f"{page.resource} page {page.number} item {position}")


def _check(
    entity: str,
    items: list[_Pending],
    balance: EntityBalance,
    index: QuarantineIndex,
    sinks: Sequence[VersionedSink],
    seen: set[int],
) -> None:
    keys = list(dict.fromkeys(item.key for item in items))  # a page may repeat a key
    stored_by_sink = {sink.name: sink.stored_versions(entity, keys) for sink in sinks}
    for item in items:
        wanted = parse_timestamp(item.version)
        lacking = [
            name
            for name, stored in stored_by_sink.items()
            if item.key not in stored or parse_timestamp(stored[item.key]) < wanted
        ]
        if not lacking:
            digest = key_digest(item.key)
            newer = any(
                parse_timestamp(stored[item.key]) > wanted for stored in stored_by_sink.values()
            )
            if digest in seen or newer:
                balance.superseded += 1
            else:
                balance.stored += 1
            seen.add(digest)
        elif item.key in index.load_keys:
            balance.quarantined += 1
        else:
            label = ":".join([entity, *(str(part) for part in item.key)])
            _missing(balance, f"{label}@{item.version} (not in {', '.join(lacking)})")


def _missing(balance: EntityBalance, label: str) -> None:
    balance.missing += 1
    if len(balance.missing_records) < MISSING_SAMPLES:
        balance.missing_records.append(label)


def quarantine_index(quarantine: Quarantine, run_id: str, entity: str) -> QuarantineIndex:
    """What the quarantine holds of a run's entity: ingest positions, load keys, redrives."""
    index = QuarantineIndex()
    for key in quarantine.keys(f"{run_id}/{entity}"):
        origin = key.rsplit("/", 1)[-1].removesuffix(".json")
        if origin.startswith("ingest-"):
            index.ingest_origins.add(origin)
        else:
            record = quarantine.get(key)
            item_key = key_of_envelope(entity, record.payload)
            if item_key is not None:
                index.load_keys.add(item_key)
    for marker in quarantine.redriven(run_id, entity):
        if marker.key_parts is not None and marker.updated_at is not None:
            index.redriven[marker.origin] = (tuple(marker.key_parts), marker.updated_at)
    return index
