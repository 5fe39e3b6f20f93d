"""The fan-out worker: fetch and publish one page range of one resource (an SQS work item)."""

from __future__ import annotations

from chalicelib.fanout import WorkItem
from chalicelib.ingest import IngestDependencies, ResourceCounts


def run_work_item(deps: IngestDependencies, item: WorkItem) -> ResourceCounts:
    """Publish the item's pages; raises when the item must be retried."""
    raise NotImplementedError("fan-out worker: being ported from issue-7-perf")
