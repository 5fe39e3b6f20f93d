"""The scheduled job: fetch every page of each resource and publish it to Kinesis.

Each item is validated on arrival; one that breaks the contract is quarantined with its reason
(never dropped, never published), the rest is wrapped in an envelope and published as its page
arrives, so memory holds one PutRecords call's worth at most. The run manifest records what
was fetched, published and quarantined per resource.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import requests
from pydantic import ValidationError

from chalicelib.contract import (
    describe_validation_error,
    entity_key,
    partition_key,
    validate_item,
)
from chalicelib.manifest import RunManifests
from chalicelib.metrics import record_api_error, record_resource_ingested
from chalicelib.progress import (
    NEVER,
    Deadline,
    PageLedger,
    ResourceCheckpoint,
    RunProgress,
    RunState,
    RunSuperseded,
)
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
from chalicelib.telemetry import logger, page_id


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


@dataclass
class ResourceCounts:
    fetched: int = 0
    published: int = 0
    quarantined: int = 0
    pages: int = 0
    put_records_failed: int = 0
    error: str | None = None

    def as_manifest(self, resource: str) -> dict[str, int]:
        return {
            f"fetched.{resource}": self.fetched,
            f"published.{resource}": self.published,
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
        return self.interruption or "published"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "status": self.status,
            "resources": {
                name: {
                    "fetched": c.fetched,
                    "published": c.published,
                    "quarantined": c.quarantined,
                    "pages": c.pages,
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
    for resource in settings.resource_list:
        if state is not None and state.complete(resource):
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
        try:
            finished = _ingest_resource(deps, result.run_id, resource, counts, checkpoint, deadline)
        except (SourceError, PublishError) as error:
            finished = True
            counts.error = str(error)
            if isinstance(error, SourceError):
                record_api_error(resource, error.status)
            logger.error(
                "resource ingestion failed",
                extra={"step": "ingest", "entity": resource, "error": counts.error},
            )
        except RunSuperseded as superseded:
            result.interruption = "superseded"
            logger.warning(str(superseded), extra={"step": "ingest", "entity": resource})
            break
        if checkpoint is None:
            deps.manifests.add_counts(result.run_id, counts.as_manifest(resource))
        record_resource_ingested(
            resource,
            fetched=counts.fetched,
            published=counts.published,
            quarantined=counts.quarantined,
            pages=counts.pages,
            put_records_failed=counts.put_records_failed,
            duration_s=time.monotonic() - started,
        )
        if not finished:
            result.interruption = "continuing"
            break
    status = result.status
    fields = {"ingest_status": status}
    if status in ("published", "failed"):
        fields["ingest_finished_at"] = utc_now_iso()
    if status != "superseded":
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
) -> bool:
    """Publish the pages of `resource` after its checkpoint; False when stopped at the deadline.

    Checkpoints are committed only when the publisher's buffer was flushed without error: after
    a failed publish (or any unexpected error) the pages since the last checkpoint are fetched
    again by the next invocation.
    """
    publisher = deps.publisher
    published_before = publisher.stats.published_by_entity.get(resource, 0)
    failed_before = publisher.stats.failed_by_entity.get(resource, 0)
    first_page = checkpoint.next_page if checkpoint is not None else 1
    finished = False
    try:
        with contextlib.closing(
            fetch_pages(deps.session, deps.settings, resource, first_page=first_page)
        ) as pages:
            for page in pages:
                counts.pages += 1
                ledger = _publish_page(deps, run_id, page, counts)
                if checkpoint is not None:
                    checkpoint.add(ledger)
                logger.info(
                    "page published",
                    extra={
                        "step": "ingest",
                        "entity": resource,
                        "page_id": page_id(run_id, resource, page.number),
                        "page": page.number,
                        "pages": page.pages,
                        "total": page.total,
                        "items": len(page.items),
                    },
                )
                if deadline.reached():
                    break
            else:
                finished = True
        _flush_and_checkpoint(publisher, checkpoint, complete=finished)
    except SourceError:
        # The fetch failed, not the publishing: what was fetched must reach the stream.
        _flush_and_checkpoint(publisher, checkpoint, complete=False)
        raise
    finally:
        counts.published = publisher.stats.published_by_entity.get(resource, 0) - published_before
        counts.put_records_failed = (
            publisher.stats.failed_by_entity.get(resource, 0) - failed_before
        )
    return finished


def _flush_and_checkpoint(
    publisher: KinesisPublisher, checkpoint: ResourceCheckpoint | None, *, complete: bool
) -> None:
    if checkpoint is None:
        publisher.flush()
    else:
        checkpoint.commit(complete=complete)  # flushes first


def _publish_page(
    deps: IngestDependencies, run_id: str, page: Page, counts: ResourceCounts
) -> PageLedger:
    """Validate and queue a page's items; returns what the ledger keeps of the page."""
    ledger = PageLedger(page.resource, page.number)
    fetched_at = utc_now_iso()
    page_ref = page_id(run_id, page.resource, page.number)
    for position, raw in enumerate(page.items):
        counts.fetched += 1
        origin = f"ingest-p{page.number}-i{position}"
        try:
            item = validate_item(page.resource, raw)
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
            deps.publisher.add(record)
            ledger.entries.append(
                (position, list(entity_key(page.resource, item)), item["updated_at"])
            )
        except (ValidationError, RecordTooLarge, orjson.JSONEncodeError) as error:
            _quarantine(deps, run_id, page.resource, origin, raw, error)
            counts.quarantined += 1
            ledger.entries.append((position, None, None))
    return ledger


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
