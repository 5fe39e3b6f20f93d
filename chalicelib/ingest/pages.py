"""The page pipeline of one resource: fetch, screen (validate, look up) and publish in order.

Pages are screened by a few threads working ahead of the publishing, which stays in page
order; each page's outcome per item goes to its ledger (`chalicelib/ingest/page_ledgers.py`).
A resource with more pages than one invocation should fetch is fanned out instead
(`chalicelib/ingest/fanout.py`).
"""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from chalicelib.ingest.context import IngestDependencies, ResourceCounts, utc_now_iso
from chalicelib.ingest.drift import page_drift, report_drift
from chalicelib.ingest.fanout import WorkItem, plan_ranges
from chalicelib.ingest.item_quarantine import quarantine_item
from chalicelib.ingest.page import Page, SourceError
from chalicelib.ingest.page_ledgers import WorkLedger
from chalicelib.ingest.source import fetch_pages
from chalicelib.model.contract import entity_key, partition_key, validate_item
from chalicelib.model.envelope import encode_envelope, page_id
from chalicelib.observability.logging import logger
from chalicelib.runs.ledger import NEVER, Deadline, ResourceCheckpoint
from chalicelib.runs.page_ledger import PageLedger
from chalicelib.stream.publisher import OutgoingRecord, RecordTooLarge

ANNOUNCED_TOTAL = "announced_total"
"""Manifest field `announced_total.<resource>`: the `total` page 1 announced in this run."""


def ingest_pages(
    deps: IngestDependencies,
    run_id: str,
    resource: str,
    counts: ResourceCounts,
    ledger: ResourceCheckpoint | WorkLedger,
    *,
    first_page: int,
    last_page: int | None = None,
    expected_total: int | None = None,
    deadline: Deadline = NEVER,
    fan_out: bool = False,
) -> bool:
    """Screen (validate, look up) pages a few ahead and publish them in order.

    Returns False when stopped at the deadline. What was fetched reaches the stream also when
    the source fails; the ledger is then committed as incomplete.
    """
    ahead = max(deps.settings.fetch_concurrency, 1)
    screening = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix=f"screen-{resource}")
    pending: deque[Future[_Screened]] = deque()
    finished = False
    source_error: SourceError | None = None
    try:
        try:
            with contextlib.closing(
                fetch_pages(
                    deps.session, deps.settings, resource, first_page, last_page, expected_total
                )
            ) as pages:
                for page in pages:
                    if page.number == 1 and isinstance(ledger, ResourceCheckpoint):
                        _remember_total(deps, run_id, page)
                    if fan_out and _fan_out(deps, run_id, page, counts):
                        return True
                    fan_out = False
                    pending.append(screening.submit(_screen_page, deps, run_id, page))
                    while len(pending) > ahead:
                        _publish_page(deps, run_id, pending.popleft().result(), counts, ledger)
                    if deadline.reached():
                        break
                else:
                    finished = True
        except SourceError as error:
            source_error = error
        while pending:
            _publish_page(deps, run_id, pending.popleft().result(), counts, ledger)
        ledger.commit(complete=finished and source_error is None)
    finally:
        screening.shutdown(wait=False, cancel_futures=True)
    if source_error is not None:
        raise source_error
    return finished


def _remember_total(deps: IngestDependencies, run_id: str, page: Page) -> None:
    """Record the `total` page 1 announced, for an invocation resuming the run to check."""
    if page.number == 1:
        deps.manifests.set_fields(run_id, {f"{ANNOUNCED_TOTAL}.{page.resource}": str(page.total)})


def _fan_out(deps: IngestDependencies, run_id: str, page: Page, counts: ResourceCounts) -> bool:
    """Split the resource into work items if it has more pages than one invocation fetches."""
    per_worker = deps.settings.pages_per_worker
    if deps.work_queue is None or not 0 < per_worker < page.pages:
        return False
    items, pages = deps.progress.fan_out(
        run_id, page.resource, len(plan_ranges(page.pages, per_worker)), page.pages
    )
    work = [
        WorkItem(run_id, page.resource, first, last, expected_total=page.total)
        for first, last in plan_ranges(pages, per_worker)
    ]
    deps.work_queue.send(work)
    deps.progress.mark_dispatched(run_id, page.resource)
    counts.work_items = items
    logger.info(
        "resource fanned out",
        extra={
            "step": "ingest",
            "entity": page.resource,
            "pages": pages,
            "work_items": items,
            "pages_per_worker": per_worker,
        },
    )
    return True


@dataclass
class _Screened:
    """A page after validation and the change look-up."""

    page: Page
    valid: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Position -> validated item."""
    unchanged: set[int] = field(default_factory=set)
    """Positions of valid items every sink already stores."""


def _screen_page(deps: IngestDependencies, run_id: str, page: Page) -> _Screened:
    """Validate a page's items (quarantining the bad ones) and find the unchanged ones."""
    screened = _Screened(page=page)
    for position, raw in enumerate(page.items):
        try:
            screened.valid[position] = validate_item(page.resource, raw)
        except Exception as error:  # one item never stops its page
            quarantine_item(deps, run_id, page, position, raw, error)
    if deps.changes is not None and screened.valid:
        positions = list(screened.valid)
        try:
            same = deps.changes.unchanged(page.resource, [screened.valid[p] for p in positions])
        except Exception as error:  # Unprocessed, ClientError, BotoCoreError, or any other
            # Publishing is always safe (the sinks are newest-wins); skipping is the optimization.
            logger.warning(
                "change look-up failed; the page is published in full",
                extra={
                    "step": "ingest",
                    "entity": page.resource,
                    "page": page.number,
                    "url": page.url,
                    "error": f"{type(error).__name__}: {error}"[:300],
                },
            )
        else:
            screened.unchanged = {p for p, skip in zip(positions, same, strict=True) if skip}
    return screened


def _publish_page(
    deps: IngestDependencies,
    run_id: str,
    screened: _Screened,
    counts: ResourceCounts,
    ledger: ResourceCheckpoint | WorkLedger,
) -> None:
    """Queue a screened page's changed items; the ledger gets every item's outcome."""
    page = screened.page
    entry = PageLedger(page.resource, page.number)
    fetched_at = utc_now_iso()
    page_ref = page_id(run_id, page.resource, page.number)
    counts.pages += 1
    for position, raw in enumerate(page.items):
        counts.fetched += 1
        item = screened.valid.get(position)
        if item is None:  # quarantined while screening
            counts.quarantined += 1
            entry.entries.append((position, None, None))
            continue
        try:
            key = (position, list(entity_key(page.resource, item)), item["updated_at"])
            record = None
            if position not in screened.unchanged:
                record = OutgoingRecord(
                    partition_key=partition_key(page.resource, item),
                    data=encode_envelope(
                        entity=page.resource,
                        run_id=run_id,
                        fetched_at=fetched_at,
                        item=item,
                        page=page_ref,
                    ),
                    entity=page.resource,
                )
        except Exception as error:  # orjson.JSONEncodeError, a missing key, or any other
            # one item that cannot be keyed or encoded never stops its page
            quarantine_item(deps, run_id, page, position, raw, error)
            counts.quarantined += 1
            entry.entries.append((position, None, None))
            continue
        if record is None:
            counts.unchanged += 1
            entry.unchanged += 1
        else:
            try:
                deps.publisher.add(record)  # a PublishError fails the resource, not the item
            except RecordTooLarge as error:
                quarantine_item(deps, run_id, page, position, raw, error)
                counts.quarantined += 1
                entry.entries.append((position, None, None))
                continue
        entry.entries.append(key)
    ledger.add(entry)
    drift, items_with_drift = page_drift(page.resource, page.items)
    report_drift(deps.manifests, run_id, page.resource, drift, items_with_drift)
    logger.info(
        "page published",
        extra={
            "step": "ingest",
            "entity": page.resource,
            "page_id": page_ref,
            "page": page.number,
            "url": page.url,
            "pages": page.pages,
            "total": page.total,
            "items": len(page.items),
            "unchanged": entry.unchanged,
        },
    )
