"""The fan-out worker: fetch and publish one page range of one resource (an SQS work item).

A failing item raises, so SQS hands it out again after its visibility timeout, and moves it to
the dead-letter queue `<work queue>-dlq` after a few tries (an alarm watches it). Publishing a
range twice changes nothing in the stores (newest-wins) and counts nothing twice.
"""

from __future__ import annotations

from chalicelib.ingest.fanout import WorkItem
from chalicelib.ingest.run import IngestDependencies, ResourceCounts, ingest_work_item


def run_work_item(deps: IngestDependencies, item: WorkItem) -> ResourceCounts:
    """Publish the item's pages; raises when the item must be retried."""
    try:
        return ingest_work_item(deps, item)
    finally:
        deps.publisher.close()
