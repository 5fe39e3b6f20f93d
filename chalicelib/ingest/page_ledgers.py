"""A work item's page ledger; the sequential ingest uses the run's checkpoint instead.

The sequential ingest commits a resource's pages with its checkpoint
(`chalicelib.runs.ledger.ResourceCheckpoint`, after a flush of the publisher); a fan-out work
item writes its pages as it goes and adds its counts to the run once, when its whole range is
in the stream.
"""

from __future__ import annotations

from chalicelib.runs.ledger import RunProgress
from chalicelib.runs.page_ledger import PageLedger, ledger_full, page_counts
from chalicelib.stream.publisher import KinesisPublisher


class WorkLedger:
    """Where a work item sends each page's ledger: written after a flush, counted at the end."""

    def __init__(self, progress: RunProgress, publisher: KinesisPublisher, run_id: str) -> None:
        self.progress = progress
        self.publisher = publisher
        self.run_id = run_id
        self.totals: dict[str, int] = {}
        """The manifest counters of every page written so far."""
        self._unwritten: list[PageLedger] = []

    def add(self, page: PageLedger) -> None:
        self._unwritten.append(page)
        if ledger_full(self._unwritten):
            self.commit(complete=False)

    def commit(self, *, complete: bool) -> None:
        self.publisher.flush()
        if not self._unwritten:
            return
        self.progress.write_pages(self.run_id, self._unwritten)
        for name, value in page_counts(self._unwritten[0].resource, self._unwritten).items():
            self.totals[name] = self.totals.get(name, 0) + value
        self._unwritten = []
