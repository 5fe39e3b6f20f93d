"""One page's ledger: what a fetched page held (keys, versions, quarantined positions), as the
`<prefix>-run-pages` table keeps it, split over several items when it does not fit one.

The ingest writes these (`chalicelib.runs.ledger.RunProgress`), the reconciler reads them page
by page (`chalicelib.reconcile.verdict`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from chalicelib.runs import counters

LEDGER_FLUSH_RECORDS: Final = 500
"""Commit a checkpoint about every PutRecords call's worth of records."""
LEDGER_FLUSH_PAGES: Final = 25
"""... or every 25 pages (one BatchWriteItem), whichever comes first."""
LEDGER_ITEM_BYTES: Final = 300_000
"""Largest `entries` attribute of one ledger item: DynamoDB refuses items over 400 KB, and the
rest of the item and the attribute names need some room. A page whose entries need more is
compressed, and split over several items if it still does not fit (`PageLedger.to_items`)."""
PART_SEPARATOR: Final = "~"
"""`users#000000001~002` is part 2 of page 1: `~` sorts after the digits, so a query returns
a page's parts right after it and before the next page."""


LedgerEntry = tuple[int, list[Any] | None, str | None]
"""(position in the page, key parts or None when quarantined at ingest, updated_at or None)."""


@dataclass
class PageLedger:
    """What one fetched page held, as the ledger keeps it."""

    resource: str
    number: int
    entries: list[LedgerEntry] = field(default_factory=list)
    unchanged: int = 0
    """Valid records not published because every sink already stores them (change detection);
    they have entries with their key and version like the published ones."""

    @property
    def fetched(self) -> int:
        return len(self.entries)

    @property
    def valid(self) -> int:
        return sum(1 for _, key, _ in self.entries if key is not None)

    @property
    def published(self) -> int:
        return self.valid - self.unchanged

    @property
    def quarantined(self) -> int:
        return self.fetched - self.valid

    @property
    def page_id(self) -> str:
        return f"{self.resource}#{self.number:09d}"

    def to_item(self, run_id: str) -> dict[str, Any]:
        """The page as one ledger item; see `to_items` for a page of any size."""
        return self.to_items(run_id)[0]

    def to_items(self, run_id: str) -> list[dict[str, Any]]:
        """The page as ledger items, each under DynamoDB's 400 KB item limit.

        Small pages are one item with plain `entries` (as before); a large one is zlib
        compressed (`entries_z`), and split over parts `<page_id>~NNN` if that is still too
        large. The first item names the number of parts; `RunProgress.pages` joins them.
        """
        encoded = orjson.dumps(self.entries)
        if len(encoded) <= LEDGER_ITEM_BYTES:
            return [{**self._head(run_id, self.page_id), "entries": {"B": encoded}}]
        parts = max(1, math.ceil(len(zlib.compress(encoded, 6)) / LEDGER_ITEM_BYTES))
        while True:
            step = max(1, math.ceil(len(self.entries) / parts))
            chunks = [
                zlib.compress(orjson.dumps(self.entries[start : start + step]), 6)
                for start in range(0, max(len(self.entries), 1), step)
            ]
            if all(len(chunk) <= LEDGER_ITEM_BYTES for chunk in chunks) or step == 1:
                break
            parts *= 2
        items = []
        for index, chunk in enumerate(chunks):
            page_id = self.page_id if index == 0 else f"{self.page_id}{PART_SEPARATOR}{index:03d}"
            item = {**self._head(run_id, page_id), "entries_z": {"B": chunk}}
            item["parts"] = {"N": str(len(chunks))}
            item["part"] = {"N": str(index)}
            items.append(item)
        return items

    def _head(self, run_id: str, page_id: str) -> dict[str, Any]:
        return {
            "run_id": {"S": run_id},
            "page_id": {"S": page_id},
            "resource": {"S": self.resource},
            "page": {"N": str(self.number)},
            "unchanged": {"N": str(self.unchanged)},
        }

    @staticmethod
    def is_part(item: Mapping[str, Any]) -> bool:
        """Whether a ledger item continues the page before it (part 2 and later)."""
        return int(item.get("part", {}).get("N", 0)) > 0

    @staticmethod
    def decode_entries(item: Mapping[str, Any]) -> list[LedgerEntry]:
        if "entries_z" in item:
            raw = orjson.loads(zlib.decompress(bytes(item["entries_z"]["B"])))
        else:
            raw = orjson.loads(item["entries"]["B"])
        return [(int(position), key, version) for position, key, version in raw]

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> PageLedger:
        return cls(
            resource=item["resource"]["S"],
            number=int(item["page"]["N"]),
            entries=cls.decode_entries(item),
            unchanged=int(item.get("unchanged", {}).get("N", 0)),
        )


def ledger_full(pages: Sequence[PageLedger]) -> bool:
    """Whether pages waiting for their ledger write should be committed now."""
    records = sum(page.fetched for page in pages)
    return records >= LEDGER_FLUSH_RECORDS or len(pages) >= LEDGER_FLUSH_PAGES


def page_counts(resource: str, pages: Sequence[PageLedger]) -> dict[str, int]:
    """The manifest counters a set of ledger pages adds to."""
    return {
        counters.fetched(resource): sum(page.fetched for page in pages),
        counters.published(resource): sum(page.published for page in pages),
        counters.unchanged(resource): sum(page.unchanged for page in pages),
        counters.quarantined("ingest", resource): sum(page.quarantined for page in pages),
        f"pages.{resource}": len(pages),
    }
