"""The scheduled job: fetch every page of each resource and publish it to Kinesis.

Each item is validated on arrival; one that breaks the contract is quarantined with its reason
(never dropped, never published). A valid item whose exact content every sink already stores is
skipped (change detection, `chalicelib/ingest/changes.py`); the rest is wrapped in an envelope
and published as its page arrives, so memory holds one PutRecords call's worth and a few pages
at most (the page pipeline: `chalicelib/ingest/pages.py`). The run manifest records what was
fetched, published, skipped as unchanged and quarantined per resource.

This module owns the run: it begins or resumes it from its checkpoints, takes the resources
one by one until the deadline, and records the run's ingest status. A resource with more pages
than one invocation should fetch (`PIPELINE_PAGES_PER_WORKER`) is split into page ranges on
the work queue instead (`chalicelib/ingest/fanout.py`); the `ingest_worker` function publishes
each range (`chalicelib/ingest/worker.py`), and the last one to finish marks the run's
ingestion published.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.ingest.context import IngestDependencies, ResourceCounts, utc_now_iso
from chalicelib.ingest.item_quarantine import snippet
from chalicelib.ingest.page import SourceError
from chalicelib.ingest.pages import ANNOUNCED_TOTAL, ingest_pages
from chalicelib.observability.logging import logger
from chalicelib.observability.metrics import record_api_error, record_resource_ingested
from chalicelib.runs.ledger import NEVER, Deadline, ResourceCheckpoint, RunState, RunSuperseded
from chalicelib.stream.publisher import PublishError


class IngestFailed(RuntimeError):
    """At least one resource could not be ingested completely; the run must not succeed."""


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


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: `20261126T101500Z-1a2b3c4d`."""
    moment = now or datetime.now(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def run_ingest(
    deps: IngestDependencies, run_id: str | None = None, deadline: Deadline = NEVER
) -> IngestResult:
    """Ingest every configured resource; raises IngestFailed after recording a failed run.

    A run id seen before resumes after its checkpoints (`deps.progress`), and the run stops
    cleanly (status `continuing`) once `deadline` is reached, for a new invocation to resume.
    """
    result = IngestResult(run_id=run_id or new_run_id(), started_at=utc_now_iso())
    settings = deps.settings
    logger.append_keys(run_id=result.run_id)
    state = _begin_run(deps, result)
    if state.ingest_status == "published":
        result.interruption = "duplicate"
        logger.info("run already published; nothing to do", extra={"step": "ingest"})
        return result
    fanned_out = False
    for resource in settings.resource_list:
        if state.complete(resource):
            continue
        if state.fanned_out(resource) and state.dispatched(resource):
            fanned_out = True
            continue
        if deadline.reached():
            result.interruption = "continuing"
            break
        counts = ResourceCounts()
        result.resources[resource] = counts
        started = time.monotonic()
        checkpoint = ResourceCheckpoint(
            deps.progress,
            result.run_id,
            resource,
            state.checkpoint(resource),
            deps.publisher.flush,
        )
        announced = state.manifest.get(f"{ANNOUNCED_TOTAL}.{resource}")
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
            counts.error = f"{resource}: unexpected {type(error).__name__}: {snippet(str(error))}"
            logger.exception(
                "resource ingestion failed",
                extra={"step": "ingest", "entity": resource, "error": counts.error},
            )
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
    if fanned_out and result.ok and result.interruption is None:
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


def _begin_run(deps: IngestDependencies, result: IngestResult) -> RunState:
    """Create the run's manifest, or find the checkpoints of the run this invocation resumes."""
    settings = deps.settings
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
    checkpoint: ResourceCheckpoint,
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
    first_page = checkpoint.next_page
    try:
        return ingest_pages(
            deps,
            run_id,
            resource,
            counts,
            checkpoint,
            first_page=first_page,
            expected_total=expected_total if first_page > 1 else None,
            deadline=deadline,
            fan_out=first_page == 1,
        )
    finally:
        counts.published = publisher.stats.published_by_entity.get(resource, 0) - published_before
        counts.put_records_failed = (
            publisher.stats.failed_by_entity.get(resource, 0) - failed_before
        )
