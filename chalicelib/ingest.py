"""The scheduled job: fetch every page of each resource and publish it to Kinesis.

Each item is validated on arrival; one that breaks the contract is quarantined with its reason
(never dropped, never published), the rest is wrapped in an envelope and published as its page
arrives, so memory holds one PutRecords call's worth at most. The run manifest records what
was fetched, published and quarantined per resource.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import requests
from pydantic import ValidationError

from chalicelib.changes import ChangeDetector
from chalicelib.contract import describe_validation_error, partition_key, validate_item
from chalicelib.fanout import WorkQueue
from chalicelib.manifest import RunManifests
from chalicelib.quarantine import Quarantine, QuarantinedRecord
from chalicelib.settings import Settings
from chalicelib.source import Page, SourceError, fetch_pages
from chalicelib.stream import (
    KinesisPublisher,
    OutgoingRecord,
    PublishError,
    RecordTooLarge,
    encode_envelope,
)
from chalicelib.telemetry import logger


class IngestFailed(RuntimeError):
    """At least one resource could not be ingested completely; the run must not succeed."""


@dataclass
class IngestDependencies:
    settings: Settings
    session: requests.Session
    publisher: KinesisPublisher
    quarantine: Quarantine
    manifests: RunManifests
    changes: ChangeDetector | None = None
    """Skips records every sink already processed; None publishes everything."""
    work_queue: WorkQueue | None = None
    """Where a resource larger than `pages_per_worker` pages is split; None never splits."""


@dataclass
class ResourceCounts:
    fetched: int = 0
    published: int = 0
    quarantined: int = 0
    pages: int = 0
    unchanged: int = 0
    work_items: int = 0
    error: str | None = None

    def as_manifest(self, resource: str) -> dict[str, int]:
        return {
            f"fetched.{resource}": self.fetched,
            f"published.{resource}": self.published,
            f"quarantined.ingest.{resource}": self.quarantined,
            f"pages.{resource}": self.pages,
            f"unchanged.{resource}": self.unchanged,
            f"work_items.{resource}": self.work_items,
        }


@dataclass
class IngestResult:
    run_id: str
    started_at: str
    resources: dict[str, ResourceCounts] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(counts.error is None for counts in self.resources.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "status": "published" if self.ok else "failed",
            "resources": {
                name: {
                    "fetched": c.fetched,
                    "published": c.published,
                    "quarantined": c.quarantined,
                    "pages": c.pages,
                    "unchanged": c.unchanged,
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


def run_ingest(deps: IngestDependencies, run_id: str | None = None) -> IngestResult:
    """Ingest every configured resource; raises IngestFailed after recording a failed run."""
    result = IngestResult(run_id=run_id or new_run_id(), started_at=utc_now_iso())
    settings = deps.settings
    deps.manifests.start(result.run_id, result.started_at, settings.resource_list)
    logger.append_keys(run_id=result.run_id)
    for resource in settings.resource_list:
        counts = ResourceCounts()
        result.resources[resource] = counts
        try:
            _ingest_resource(deps, result.run_id, resource, counts)
        except (SourceError, PublishError) as error:
            counts.error = str(error)
            logger.error(
                "resource ingestion failed",
                extra={"step": "ingest", "entity": resource, "error": counts.error},
            )
        deps.manifests.add_counts(result.run_id, counts.as_manifest(resource))
    status = "published" if result.ok else "failed"
    deps.manifests.set_fields(
        result.run_id, {"ingest_status": status, "ingest_finished_at": utc_now_iso()}
    )
    logger.info("ingest finished", extra={"step": "ingest", "summary": result.as_dict()})
    if not result.ok:
        failed = {name: c.error for name, c in result.resources.items() if c.error}
        raise IngestFailed(f"run {result.run_id} failed: {failed}")
    return result


def _ingest_resource(
    deps: IngestDependencies,
    run_id: str,
    resource: str,
    counts: ResourceCounts,
    first_page: int = 1,
    last_page: int | None = None,
) -> None:
    """Fetch and publish pages `first_page..last_page` (default: all) of one resource.

    When the whole resource has more pages than one invocation should fetch, it is split into
    work items on the work queue instead (fan-out), and the workers publish it.
    """
    publisher = deps.publisher
    published_before = publisher.stats.published_by_entity.get(resource, 0)
    pages_per_worker = deps.settings.pages_per_worker
    # Pages are validated and looked up in the state by a few threads ahead of the publishing,
    # which stays in page order; memory holds at most `ahead` pages more.
    ahead = deps.settings.fetch_concurrency
    screening = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix=f"screen-{resource}")
    pending: deque[Future[_Screened]] = deque()
    try:
        with contextlib.closing(
            fetch_pages(deps.session, deps.settings, resource, first_page, last_page)
        ) as pages:
            for page in pages:
                if (
                    deps.work_queue is not None
                    and first_page == 1
                    and last_page is None
                    and 0 < pages_per_worker < page.pages
                ):
                    counts.work_items = deps.work_queue.dispatch(
                        run_id, resource, page.pages, pages_per_worker
                    )
                    logger.info(
                        "resource fanned out",
                        extra={
                            "step": "ingest",
                            "entity": resource,
                            "pages": page.pages,
                            "work_items": counts.work_items,
                        },
                    )
                    return
                pending.append(screening.submit(_screen_page, deps, run_id, page))
                if len(pending) > ahead:
                    _publish_page(deps, run_id, pending.popleft().result(), counts)
    finally:
        try:  # also after a source error: what was fetched must reach the stream
            while pending:
                _publish_page(deps, run_id, pending.popleft().result(), counts)
        finally:
            screening.shutdown(wait=False, cancel_futures=True)
            publisher.flush()
            counts.published = (
                publisher.stats.published_by_entity.get(resource, 0) - published_before
            )


@dataclass
class _Screened:
    """A page after validation and the change look-up: what is left to publish."""

    page: Page
    valid: list[tuple[str, Any, dict[str, Any]]]
    quarantined: int = 0
    unchanged: int = 0


def _screen_page(deps: IngestDependencies, run_id: str, page: Page) -> _Screened:
    """Validate a page's items (quarantining the bad ones) and drop the unchanged ones."""
    screened = _Screened(page=page, valid=[])
    for position, raw in enumerate(page.items):
        origin = f"ingest-p{page.number}-i{position}"
        try:
            screened.valid.append((origin, raw, validate_item(page.resource, raw)))
        except ValidationError as error:
            _quarantine(deps, run_id, page.resource, origin, raw, error)
            screened.quarantined += 1
    if deps.changes is not None and screened.valid:
        same = deps.changes.unchanged(page.resource, [item for _, _, item in screened.valid])
        screened.unchanged = sum(same)
        screened.valid = [
            entry for entry, skip in zip(screened.valid, same, strict=True) if not skip
        ]
    return screened


def _publish_page(
    deps: IngestDependencies, run_id: str, screened: _Screened, counts: ResourceCounts
) -> None:
    page = screened.page
    counts.pages += 1
    counts.fetched += len(page.items)
    counts.quarantined += screened.quarantined
    counts.unchanged += screened.unchanged
    fetched_at = utc_now_iso()
    for origin, raw, item in screened.valid:
        try:
            record = OutgoingRecord(
                partition_key=partition_key(page.resource, item),
                data=encode_envelope(
                    entity=page.resource, run_id=run_id, fetched_at=fetched_at, item=item
                ),
                entity=page.resource,
            )
            deps.publisher.add(record)
        except (RecordTooLarge, orjson.JSONEncodeError) as error:
            _quarantine(deps, run_id, page.resource, origin, raw, error)
            counts.quarantined += 1
    logger.info(
        "page published",
        extra={
            "step": "ingest",
            "entity": page.resource,
            "page": page.number,
            "pages": page.pages,
            "total": page.total,
            "items": len(page.items),
        },
    )


def _quarantine(
    deps: IngestDependencies, run_id: str, resource: str, origin: str, raw: Any, error: Exception
) -> None:
    reason = (
        describe_validation_error(error)
        if isinstance(error, ValidationError)
        else f"{type(error).__name__}: {error}"
    )
    deps.quarantine.put(
        QuarantinedRecord(
            run_id=run_id,
            entity=resource,
            origin=origin,
            reason=reason,
            payload=json.dumps(raw, ensure_ascii=True).encode(),
        )
    )
    logger.warning(
        "record quarantined",
        extra={"step": "ingest", "entity": resource, "origin": origin, "reason": reason[:300]},
    )
