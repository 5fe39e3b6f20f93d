"""The fan-out worker: fetch and publish one page range of one resource (an SQS work item).

The counts of a work item go to the run manifest once, when the item is done, with
`work_done.<resource>` incremented; the run's ingestion is complete when
`work_done.<resource>` equals `work_items.<resource>` for every fanned-out resource. A failing
item raises, so SQS hands it out again (and to the dead-letter queue after a few tries);
publishing a range twice changes nothing in the stores (newest-wins).
"""

from __future__ import annotations

from chalicelib.fanout import WorkItem
from chalicelib.ingest import IngestDependencies, ResourceCounts, _ingest_resource
from chalicelib.telemetry import logger


def run_work_item(deps: IngestDependencies, item: WorkItem) -> ResourceCounts:
    """Publish the item's pages; raises SourceError or PublishError when it must be retried."""
    counts = ResourceCounts()
    logger.append_keys(run_id=item.run_id)
    _ingest_resource(
        deps,
        item.run_id,
        item.resource,
        counts,
        first_page=item.first_page,
        last_page=item.last_page,
    )
    manifest = counts.as_manifest(item.resource)
    del manifest[f"work_items.{item.resource}"]
    manifest[f"work_done.{item.resource}"] = 1
    deps.manifests.add_counts(item.run_id, manifest)
    logger.info(
        "work item done",
        extra={
            "step": "ingest",
            "entity": item.resource,
            "first_page": item.first_page,
            "last_page": item.last_page,
            "fetched": counts.fetched,
            "published": counts.published,
            "unchanged": counts.unchanged,
        },
    )
    return counts
