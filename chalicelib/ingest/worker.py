"""The fan-out worker: fetch and publish one page range of one resource (an SQS work item).

A failing item raises, so SQS hands it out again after its visibility timeout, and moves it to
the dead-letter queue `<work queue>-dlq` after a few tries (an alarm watches it). Publishing a
range twice changes nothing in the stores (newest-wins) and counts nothing twice.
"""

from __future__ import annotations

import time

from chalicelib.ingest.context import IngestDependencies, ResourceCounts, utc_now_iso
from chalicelib.ingest.fanout import WorkItem
from chalicelib.ingest.page import SourceError
from chalicelib.ingest.page_ledgers import WorkLedger
from chalicelib.ingest.pages import ingest_pages
from chalicelib.observability.logging import logger
from chalicelib.observability.metrics import record_api_error, record_resource_ingested


def run_work_item(deps: IngestDependencies, item: WorkItem) -> ResourceCounts:
    """Publish the item's pages; raises when the item must be retried."""
    try:
        return ingest_work_item(deps, item)
    finally:
        deps.publisher.close()


def ingest_work_item(deps: IngestDependencies, item: WorkItem) -> ResourceCounts:
    """Fetch and publish one work item's page range (the `ingest_worker` function).

    Ledger pages are written as the range goes (after the records are in the stream); the
    item's counts go to the manifest once, when the whole range is in the stream, together
    with its id, so a second delivery of the message counts nothing twice. Raises (SourceError,
    PublishError, ...) for SQS to hand the item out again.
    """
    counts = ResourceCounts()
    logger.append_keys(run_id=item.run_id)
    if deps.progress.work_item_done(item.run_id, item.work_id):
        logger.info(
            "work item already done; nothing to do",
            extra={"step": "ingest", "entity": item.resource, "work_item": item.work_id},
        )
        return counts
    started = time.monotonic()
    ledger = WorkLedger(deps.progress, deps.publisher, item.run_id)
    published_before = deps.publisher.stats.published_by_entity.get(item.resource, 0)
    try:
        ingest_pages(
            deps,
            item.run_id,
            item.resource,
            counts,
            ledger,
            first_page=item.first_page,
            last_page=item.last_page,
            expected_total=item.expected_total,
        )
    except SourceError as error:
        record_api_error(item.resource, error.status)
        logger.error(
            "work item failed",
            extra={
                "step": "ingest",
                "entity": item.resource,
                "work_item": item.work_id,
                "url": error.url,
                "error": str(error),
            },
        )
        raise
    finally:
        counts.published = (
            deps.publisher.stats.published_by_entity.get(item.resource, 0) - published_before
        )
    counted = deps.progress.finish_work_item(
        item.run_id, item.resource, item.work_id, ledger.totals
    )
    finished_run = deps.progress.finish_run_if_complete(item.run_id, utc_now_iso())
    record_resource_ingested(
        item.resource,
        fetched=counts.fetched,
        published=counts.published,
        unchanged=counts.unchanged,
        quarantined=counts.quarantined,
        pages=counts.pages,
        put_records_failed=0,
        duration_s=time.monotonic() - started,
    )
    logger.info(
        "work item done",
        extra={
            "step": "ingest",
            "entity": item.resource,
            "work_item": item.work_id,
            "fetched": counts.fetched,
            "published": counts.published,
            "unchanged": counts.unchanged,
            "quarantined": counts.quarantined,
            "counted": counted,
            "run_ingest_published": finished_run,
        },
    )
    return counts
