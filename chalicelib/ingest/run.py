"""The scheduled job: fetch every page of each resource and publish it to Kinesis.

Each item is validated on arrival; one that breaks the contract is quarantined with its reason
(never dropped, never published). A valid item whose exact content every sink already stores is
skipped (change detection, `chalicelib/changes.py`); the rest is wrapped in an envelope and
published as its page arrives, so memory holds one PutRecords call's worth and a few pages at
most. Pages are validated and looked up by a few threads ahead of the publishing, which stays
in page order. The run manifest records what was fetched, published, skipped as unchanged and
quarantined per resource.

A resource with more pages than one invocation should fetch (`PIPELINE_PAGES_PER_WORKER`) is
split into page ranges on the work queue instead (`chalicelib/fanout.py`); the
`ingest_worker` function publishes each range (`ingest_work_item`), and the last one to finish
marks the run's ingestion published.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from pydantic import ValidationError

from chalicelib.deadletter.quarantine import Quarantine, QuarantinedRecord
from chalicelib.ingest.changes import ChangeDetector
from chalicelib.ingest.drift import page_drift, report_drift
from chalicelib.ingest.fanout import WorkItem, WorkQueue, plan_ranges
from chalicelib.ingest.source import Page, SourceError, fetch_pages
from chalicelib.manifest import RunManifests
from chalicelib.model.contract import (
    describe_validation_error,
    entity_key,
    partition_key,
    validate_item,
)
from chalicelib.observability.logging import logger, page_id
from chalicelib.observability.metrics import record_api_error, record_resource_ingested
from chalicelib.progress import (
    NEVER,
    Deadline,
    PageLedger,
    ResourceCheckpoint,
    RunProgress,
    RunState,
    RunSuperseded,
    ledger_full,
    page_counts,
)
from chalicelib.settings import Settings
from chalicelib.stream.publisher import (
    KinesisPublisher,
    OutgoingRecord,
    PublishError,
    RecordTooLarge,
    encode_envelope,
)

ANNOUNCED_TOTAL = "announced_total"
"""Manifest field `announced_total.<resource>`: the `total` page 1 announced in this run."""


class IngestFailed(RuntimeError):
    """At least one resource could not be ingested completely; the run must not succeed."""


@dataclass
class IngestDependencies:
    settings: Settings
    session: requests.Session
    publisher: KinesisPublisher
    quarantine: Quarantine
    manifests: RunManifests
    progress: RunProgress | None = None
    """Checkpoints and page ledger; without it a run cannot resume nor be reconciled by key."""
    changes: ChangeDetector | None = None
    """Skips records every sink already stores; None publishes everything."""
    work_queue: WorkQueue | None = None
    """Where a resource larger than `pages_per_worker` pages is split (needs `progress`)."""


@dataclass
class ResourceCounts:
    fetched: int = 0
    published: int = 0
    quarantined: int = 0
    pages: int = 0
    unchanged: int = 0
    work_items: int = 0
    """Work items the resource was split into (fan-out); its records are counted by them."""
    put_records_failed: int = 0
    error: str | None = None

    def as_manifest(self, resource: str) -> dict[str, int]:
        return {
            f"fetched.{resource}": self.fetched,
            f"published.{resource}": self.published,
            f"unchanged.{resource}": self.unchanged,
            f"quarantined.ingest.{resource}": self.quarantined,
            f"pages.{resource}": self.pages,
        }


@dataclass
class IngestResult:
    run_id: str
    started_at: str
    resources: dict[str, ResourceCounts] = field(default_factory=dict)
    interruption: str | None = None
    """`continuing` (stopped before the timeout, to resume), `superseded` (another invocation
    owns the run) or `duplicate` (the run was already published); None when it ran through."""
    waiting_for_workers: bool = False
    """Fanned-out work items are still running: the last of them finishes the run."""
    crashed: bool = False
    """A resource failed with an unexpected error (not the source's nor the stream's): the
    other resources still ran and the summary is logged, but the run is left `running` for
    Lambda's retry of the event to resume, as after a crash."""

    @property
    def ok(self) -> bool:
        return all(counts.error is None for counts in self.resources.values())

    @property
    def continuing(self) -> bool:
        return self.interruption == "continuing"

    @property
    def status(self) -> str:
        if not self.ok:
            return "failed"
        if self.interruption:
            return self.interruption
        return "fanned_out" if self.waiting_for_workers else "published"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "status": self.status,
            "resources": {
                name: {
                    "fetched": c.fetched,
                    "published": c.published,
                    "unchanged": c.unchanged,
                    "quarantined": c.quarantined,
                    "pages": c.pages,
                    "work_items": c.work_items,
                    "error": c.error,
                }
                for name, c in self.resources.items()
            },
        }


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: `20261126T101500Z-1a2b3c4d`."""
    moment = now or datetime.now(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def run_ingest(
    deps: IngestDependencies, run_id: str | None = None, deadline: Deadline = NEVER
) -> IngestResult:
    """Ingest every configured resource; raises IngestFailed after recording a failed run.

    With `deps.progress`, a run id seen before resumes after its checkpoints, and the run stops
    cleanly (status `continuing`) once `deadline` is reached, for a new invocation to resume.
    """
    result = IngestResult(run_id=run_id or new_run_id(), started_at=utc_now_iso())
    settings = deps.settings
    logger.append_keys(run_id=result.run_id)
    state = _begin_run(deps, result)
    if state is not None and state.ingest_status == "published":
        result.interruption = "duplicate"
        logger.info("run already published; nothing to do", extra={"step": "ingest"})
        return result
    fanned_out = False
    for resource in settings.resource_list:
        if state is not None and state.complete(resource):
            continue
        if state is not None and state.fanned_out(resource) and state.dispatched(resource):
            fanned_out = True
            continue
        if deadline.reached():
            result.interruption = "continuing"
            break
        counts = ResourceCounts()
        result.resources[resource] = counts
        started = time.monotonic()
        checkpoint = (
            ResourceCheckpoint(
                deps.progress,
                result.run_id,
                resource,
                state.checkpoint(resource),
                deps.publisher.flush,
            )
            if deps.progress is not None and state is not None
            else None
        )
        announced = state.manifest.get(f"{ANNOUNCED_TOTAL}.{resource}") if state else None
        try:
            finished = _ingest_resource(
                deps,
                result.run_id,
                resource,
                counts,
                checkpoint,
                deadline,
                expected_total=None if announced is None else int(announced),
            )
        except (SourceError, PublishError) as error:
            finished = True
            counts.error = str(error)
            if isinstance(error, SourceError):
                record_api_error(resource, error.status)
            logger.error(
                "resource ingestion failed",
                extra={
                    "step": "ingest",
                    "entity": resource,
                    "url": getattr(error, "url", None),
                    "error": counts.error,
                },
            )
        except RunSuperseded as superseded:
            result.interruption = "superseded"
            logger.warning(str(superseded), extra={"step": "ingest", "entity": resource})
            break
        except Exception as error:  # one resource never stops the others
            finished = True
            result.crashed = True
            counts.error = f"{resource}: unexpected {type(error).__name__}: {_snippet(str(error))}"
            logger.exception(
                "resource ingestion failed",
                extra={"step": "ingest", "entity": resource, "error": counts.error},
            )
        if checkpoint is None:
            deps.manifests.add_counts(result.run_id, counts.as_manifest(resource))
        if counts.work_items:
            fanned_out = True
        else:
            record_resource_ingested(
                resource,
                fetched=counts.fetched,
                published=counts.published,
                unchanged=counts.unchanged,
                quarantined=counts.quarantined,
                pages=counts.pages,
                put_records_failed=counts.put_records_failed,
                duration_s=time.monotonic() - started,
            )
        if not finished:
            result.interruption = "continuing"
            break
    if fanned_out and result.ok and result.interruption is None and deps.progress is not None:
        # The workers may all be done already; whoever finishes last marks the run published.
        if not deps.progress.finish_run_if_complete(result.run_id, utc_now_iso()):
            result.waiting_for_workers = True
            deps.progress.set_status_unless_final(result.run_id, "fanned_out")
    elif result.status != "superseded" and not result.crashed:
        status = result.status
        fields = {"ingest_status": status}
        if status in ("published", "failed"):
            fields["ingest_finished_at"] = utc_now_iso()
        deps.manifests.set_fields(result.run_id, fields)
    logger.info("ingest finished", extra={"step": "ingest", "summary": result.as_dict()})
    if not result.ok:
        failed = {name: c.error for name, c in result.resources.items() if c.error}
        raise IngestFailed(f"run {result.run_id} failed: {failed}")
    return result


def _begin_run(deps: IngestDependencies, result: IngestResult) -> RunState | None:
    """Create the run's manifest, or find the checkpoints of the run this invocation resumes."""
    settings = deps.settings
    if deps.progress is None:
        deps.manifests.start(result.run_id, result.started_at, settings.resource_list)
        return None
    state = deps.progress.begin(result.run_id, result.started_at, settings.resource_list)
    if state.resumed:
        logger.info(
            "resuming run",
            extra={
                "step": "ingest",
                "invocation": state.invocations,
                "checkpoints": {r: state.checkpoint(r) for r in settings.resource_list},
            },
        )
    if state.invocations > settings.ingest_max_invocations and state.ingest_status != "published":
        deps.manifests.set_fields(
            result.run_id, {"ingest_status": "failed", "ingest_finished_at": utc_now_iso()}
        )
        raise IngestFailed(
            f"run {result.run_id} failed: still incomplete after {settings.ingest_max_invocations}"
            " invocations (PIPELINE_INGEST_MAX_INVOCATIONS)"
        )
    return state


def _ingest_resource(
    deps: IngestDependencies,
    run_id: str,
    resource: str,
    counts: ResourceCounts,
    checkpoint: ResourceCheckpoint | None = None,
    deadline: Deadline = NEVER,
    expected_total: int | None = None,
) -> bool:
    """Publish the pages of `resource` after its checkpoint; False when stopped at the deadline.

    A resumed resource must find the `total` its page 1 announced (`expected_total`): rows
    added or removed meanwhile shift the offsets, and resuming after the checkpoint would skip
    or repeat rows.

    Checkpoints are committed only when the publisher's buffer was flushed without error: after
    a failed publish (or any unexpected error) the pages since the last checkpoint are fetched
    again by the next invocation. A resource too large for one invocation is fanned out
    instead (True: this invocation is done with it).
    """
    publisher = deps.publisher
    published_before = publisher.stats.published_by_entity.get(resource, 0)
    failed_before = publisher.stats.failed_by_entity.get(resource, 0)
    first_page = checkpoint.next_page if checkpoint is not None else 1
    try:
        return _ingest_pages(
            deps,
            run_id,
            resource,
            counts,
            _CheckpointLedger(publisher, checkpoint),
            first_page=first_page,
            expected_total=expected_total if first_page > 1 else None,
            deadline=deadline,
            fan_out=checkpoint is not None and first_page == 1,
        )
    finally:
        counts.published = publisher.stats.published_by_entity.get(resource, 0) - published_before
        counts.put_records_failed = (
            publisher.stats.failed_by_entity.get(resource, 0) - failed_before
        )


def ingest_work_item(deps: IngestDependencies, item: WorkItem) -> ResourceCounts:
    """Fetch and publish one work item's page range (the `ingest_worker` function).

    Ledger pages are written as the range goes (after the records are in the stream); the
    item's counts go to the manifest once, when the whole range is in the stream, together
    with its id, so a second delivery of the message counts nothing twice. Raises (SourceError,
    PublishError, ...) for SQS to hand the item out again.
    """
    if deps.progress is None:
        raise ValueError("a work item needs the run progress (checkpoints and page ledger)")
    counts = ResourceCounts()
    logger.append_keys(run_id=item.run_id)
    if deps.progress.work_item_done(item.run_id, item.work_id):
        logger.info(
            "work item already done; nothing to do",
            extra={"step": "ingest", "entity": item.resource, "work_item": item.work_id},
        )
        return counts
    started = time.monotonic()
    ledger = _WorkLedger(deps.progress, deps.publisher, item.run_id)
    published_before = deps.publisher.stats.published_by_entity.get(item.resource, 0)
    try:
        _ingest_pages(
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


class _CheckpointLedger:
    """Where the sequential ingest sends each page's ledger: the resource's checkpoint."""

    def __init__(self, publisher: KinesisPublisher, checkpoint: ResourceCheckpoint | None) -> None:
        self.publisher = publisher
        self.checkpoint = checkpoint

    def add(self, page: PageLedger) -> None:
        if self.checkpoint is not None:
            self.checkpoint.add(page)

    def commit(self, *, complete: bool) -> None:
        if self.checkpoint is None:
            self.publisher.flush()
        else:
            self.checkpoint.commit(complete=complete)  # flushes first


class _WorkLedger:
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


def _ingest_pages(
    deps: IngestDependencies,
    run_id: str,
    resource: str,
    counts: ResourceCounts,
    ledger: _CheckpointLedger | _WorkLedger,
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
                    if page.number == 1 and isinstance(ledger, _CheckpointLedger):
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
    if deps.progress is not None and page.number == 1:
        deps.manifests.set_fields(run_id, {f"{ANNOUNCED_TOTAL}.{page.resource}": str(page.total)})


def _fan_out(deps: IngestDependencies, run_id: str, page: Page, counts: ResourceCounts) -> bool:
    """Split the resource into work items if it has more pages than one invocation fetches."""
    per_worker = deps.settings.pages_per_worker
    if deps.work_queue is None or deps.progress is None or not 0 < per_worker < page.pages:
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
            _quarantine(deps, run_id, page, position, raw, error)
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
    ledger: _CheckpointLedger | _WorkLedger,
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
            _quarantine(deps, run_id, page, position, raw, error)
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
                _quarantine(deps, run_id, page, position, raw, error)
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


def _quarantine(
    deps: IngestDependencies, run_id: str, page: Page, position: int, raw: Any, error: Exception
) -> None:
    """Keep one item that cannot be published, with its reason; log it once, with its page and
    key, so an operator can find it in the source."""
    origin = f"ingest-p{page.number}-i{position}"
    reason = (
        describe_validation_error(error)
        if isinstance(error, ValidationError)
        else f"cannot be processed: {type(error).__name__}: {_snippet(str(error))}"
    )
    deps.quarantine.put(
        QuarantinedRecord(
            run_id=run_id,
            entity=page.resource,
            origin=origin,
            reason=reason,
            payload=_payload_bytes(raw),
        )
    )
    logger.warning(
        "record quarantined",
        extra={
            "step": "ingest",
            "entity": page.resource,
            "origin": origin,
            "page": page.number,
            "url": page.url,
            "key": _raw_key(page.resource, raw),
            "reason": reason[:300],
        },
    )


def _payload_bytes(raw: Any) -> bytes:
    """The item as served, as JSON; an item JSON cannot re-encode (nested too deeply for the
    encoder) is kept as a description, so its quarantine never fails."""
    try:
        return json.dumps(raw, ensure_ascii=True).encode()
    except (ValueError, TypeError, RecursionError) as error:
        return json.dumps(
            {"unencodable_item": f"{type(raw).__name__}", "error": type(error).__name__}
        ).encode()


def _raw_key(resource: str, raw: Any) -> str | None:
    """The item's key as served (it may be invalid), for logs: `id`, or `user_id@created_at`."""
    if not isinstance(raw, dict):
        return None
    fields = ("user_id", "created_at") if resource == "listen_history" else ("id",)
    parts = [raw.get(name) for name in fields]
    if all(part is None for part in parts):
        return None
    return _snippet("@".join(str(part) for part in parts))


def _snippet(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
