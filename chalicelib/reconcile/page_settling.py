"""Settling one ledger page from the run's read-back rows and the load's evidence.

The fast path of the reconciliation (`chalicelib.reconcile.verdict`): a page balances when, for
every sink, each record has a row of this run and page at its version, is in the sink's
evidence, or is quarantined, and the records left over are exactly the page's `unchanged`
count. A page that does not balance is checked key by key by the reconciler. The read-back is
taken page by page beside the ledger (`RunRows`), so memory holds one page per sink.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from chalicelib.load.evidence import PageEvidence, record_digest
from chalicelib.runs.page_ledger import PageLedger

T = TypeVar("T")
RunRow = tuple[int, tuple[Any, ...], str]
"""(page, `entity_key`, `updated_at`) of a row a run wrote, as a sink reads it back."""


@dataclass
class QuarantineIndex:
    """What the quarantine says about one run and entity."""

    ingest_origins: set[str] = field(default_factory=set)
    load_keys: set[Hashable] = field(default_factory=set)
    redriven: dict[str, tuple[Hashable, str]] = field(default_factory=dict)


@dataclass
class PageSettled:
    """What a balanced page counts."""

    fetched: int = 0
    stored: int = 0
    superseded: int = 0
    quarantined: int = 0


def settle_page(
    page: PageLedger,
    rows: Mapping[str, Mapping[tuple[Any, ...], str]],
    evidence: PageEvidence | None,
    index: QuarantineIndex,
    sinks: Sequence[str],
) -> PageSettled | None:
    """Count a page from the rows its run wrote and the load's evidence; None when it does
    not balance (then it is checked key by key)."""
    settled = PageSettled(fetched=len(page.entries))
    skipped = evidence.skipped if evidence is not None else {}
    written: set[tuple[Any, ...]] = set()
    nowhere: list[tuple[Any, ...]] = []
    for position, raw_key, version in page.entries:
        if raw_key is None or version is None:
            if f"ingest-p{page.number}-i{position}" in index.ingest_origins:
                settled.quarantined += 1
                continue
            return None  # redriven or lost: the key-by-key check tells which
        key = tuple(raw_key)
        digest = record_digest(key, version)
        by_row = [rows[sink].get(key) == version for sink in sinks]
        by_evidence = [digest in skipped.get(sink, ()) for sink in sinks]
        accounted = [row or noted for row, noted in zip(by_row, by_evidence, strict=True)]
        if all(accounted):
            if any(by_row) and key not in written:
                written.add(key)
                settled.stored += 1
            else:  # a repeat on the page, or a version at least as new was stored
                settled.superseded += 1
        elif not any(accounted):
            nowhere.append(key)
        else:
            return None  # one sink has it, another not
    if len(nowhere) == page.unchanged:
        settled.stored += len(nowhere)  # not published: every sink stored this content
    elif page.unchanged == 0 and all(key in index.load_keys for key in nowhere):
        settled.quarantined += len(nowhere)
    else:
        return None
    return settled


class RunRows:
    """One sink's read-back of a run's rows of one entity, taken page by page in order."""

    def __init__(self, rows: Iterator[RunRow]) -> None:
        self._source = rows
        self._rows = Ahead(rows)

    def close(self) -> None:
        """Stop the read-back (a read-ahead thread ends)."""
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def page(self, number: int) -> dict[tuple[Any, ...], str]:
        """The rows of page `number` (`key -> updated_at`); rows of earlier pages the ledger
        does not list are passed over."""
        found: dict[tuple[Any, ...], str] = {}
        while (row := self._rows.take(lambda row: row[0] < number)) is not None:
            if row[0] > number:
                break
            found[row[1]] = row[2]
            self._rows.next()
        return found


class Ahead(Generic[T]):
    """An iterator that can look one element ahead."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items
        self._head: T | None = next(items, None)

    def take(self, skip: Any) -> T | None:
        """The next element for which `skip(element)` is false (passing over the others)."""
        while self._head is not None and skip(self._head):
            self._head = next(self._items, None)
        return self._head

    def next(self) -> None:
        self._head = next(self._items, None)
