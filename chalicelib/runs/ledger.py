"""Resumable ingestion: the run's progress and checkpoints over its per-page ledger
(`chalicelib.runs.page_ledger`).

After the records of some pages are in Kinesis (never before: the publisher is flushed first),
the ingest writes one ledger item per page to the `<prefix>-run-pages` table (the page's keys
and versions, and the positions it quarantined), then advances the run's checkpoint for that
resource in the manifest, adding the pages' counts in the same conditional update. Hence:

- a re-invocation of the same run (same EventBridge event: Lambda's async retry after a crash
  or timeout, or the ingest's own continuation before its timeout) resumes after the last
  checkpointed page; pages published but not checkpointed are published again, which the
  newest-wins sinks absorb, and their ledger items are overwritten, so nothing counts twice;
- the reconciler reads the ledger page by page to check every fetched key against the stores,
  so no process ever holds a whole run's keys in memory.

The checkpoint update is conditional on the previous value, so two invocations racing on one
run (a duplicated event) cannot both count a page: the loser stops (`RunSuperseded`).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.aws.dynamo_batch import write_all
from chalicelib.runs.manifest import RunManifests
from chalicelib.runs.page_ledger import PART_SEPARATOR, PageLedger, ledger_full, page_counts

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class RunSuperseded(RuntimeError):
    """Another invocation advanced this run's checkpoint: this one must stop."""


class RunExhausted(RuntimeError):
    """The run used all the invocations it may use; it is declared failed."""


def run_id_for_event(event: Mapping[str, Any], now: datetime | None = None) -> str:
    """A run id that every delivery of one EventBridge event maps to.

    `<event time>Z-<8 hex of the event id>`: sortable like `new_run_id`, and the same for the
    retries and continuations of one scheduled event, which is how they find their run. An
    event without an id (a manual invocation) gets a fresh run.
    """
    event_id = event.get("id")
    moment = now or datetime.now(UTC)
    raw_time = event.get("time")
    if isinstance(raw_time, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(raw_time.replace("Z", "+00:00")).astimezone(UTC)
    suffix = (
        hashlib.sha256(str(event_id).encode()).hexdigest()[:8] if event_id else uuid.uuid4().hex[:8]
    )
    return f"{moment:%Y%m%dT%H%M%SZ}-{suffix}"


class Deadline:
    """When to stop: `margin_s` before the Lambda context runs out of time."""

    def __init__(self, context: Any, margin_s: float) -> None:
        self.context = context
        self.margin_ms = margin_s * 1000

    def reached(self) -> bool:
        remaining = getattr(self.context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return False
        return bool(remaining() < self.margin_ms)


NEVER = Deadline(None, 0)


@dataclass(frozen=True)
class RunState:
    """A run's manifest as an invocation finds it."""

    run_id: str
    manifest: dict[str, Any]
    resumed: bool

    def checkpoint(self, resource: str) -> int:
        """The last page of `resource` whose records are all in the stream (0: none)."""
        return int(self.manifest.get(f"checkpoint.{resource}", 0))

    def complete(self, resource: str) -> bool:
        return bool(self.manifest.get(f"complete.{resource}", 0))

    def fanned_out(self, resource: str) -> bool:
        """The resource was split into work items for the ingest_worker function."""
        return bool(self.manifest.get(f"work_items.{resource}", 0))

    def dispatched(self, resource: str) -> bool:
        """Its work items are all on the work queue."""
        return bool(self.manifest.get(f"dispatched.{resource}", 0))

    @property
    def ingest_status(self) -> str:
        return str(self.manifest.get("ingest_status", "running"))

    @property
    def invocations(self) -> int:
        return int(self.manifest.get("ingest_invocations", 0))


class RunProgress:
    """The run manifest's checkpoints and the `<prefix>-run-pages` ledger."""

    def __init__(
        self,
        client: DynamoDBClient,
        runs_table: str,
        pages_table: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.manifests = RunManifests(client, runs_table)
        self.pages_table = pages_table
        self.sleep = sleep

    def begin(self, run_id: str, started_at: str, resources: Sequence[str]) -> RunState:
        """Create the run's manifest, or find it when this invocation resumes the run."""
        manifest, resumed = self.manifests.begin(run_id, started_at, resources)
        return RunState(run_id, manifest, resumed)

    def commit(
        self,
        run_id: str,
        resource: str,
        pages: Sequence[PageLedger],
        previous_checkpoint: int,
        *,
        complete: bool = False,
    ) -> int:
        """Record `pages` (all already in the stream) and advance the checkpoint past them.

        Returns the new checkpoint. Raises `RunSuperseded` when the stored checkpoint is not
        `previous_checkpoint` any more (another invocation works on the run).
        """
        self._write_ledger(run_id, pages)
        checkpoint = max([previous_checkpoint, *(page.number for page in pages)])
        counts = page_counts(resource, pages)
        if not self.manifests.advance_checkpoint(
            run_id, resource, previous_checkpoint, checkpoint, counts, complete=complete
        ):
            raise RunSuperseded(
                f"run {run_id}: the checkpoint of {resource} moved past page "
                f"{previous_checkpoint} in another invocation"
            )
        return checkpoint

    def write_pages(self, run_id: str, pages: Sequence[PageLedger]) -> None:
        """Record ledger pages (all already in the stream) without touching any counter: a
        work item counts its pages once, when it is done (`finish_work_item`)."""
        self._write_ledger(run_id, pages)

    def fan_out(self, run_id: str, resource: str, work_items: int, pages: int) -> tuple[int, int]:
        """Record that `resource` is split into `work_items` ranges planned over `pages` pages.

        Only the first invocation records it; a later one (a retry that crashed between this and
        the dispatch) gets the recorded plan back, so it sends the very same work items.
        Returns the recorded (work_items, pages).
        """
        return self.manifests.fan_out(run_id, resource, work_items, pages)

    def mark_dispatched(self, run_id: str, resource: str) -> None:
        self.manifests.mark_dispatched(run_id, resource)

    def work_item_done(self, run_id: str, work_id: str) -> bool:
        """Whether a work item was already counted (SQS delivers a message at least once)."""
        return self.manifests.work_item_done(run_id, work_id)

    def finish_work_item(
        self, run_id: str, resource: str, work_id: str, counts: Mapping[str, int]
    ) -> bool:
        """Add a finished work item's counts to the manifest, once per work item.

        Returns False when another delivery of the same item counted it already.
        """
        return self.manifests.finish_work_item(run_id, resource, work_id, counts)

    def finish_run_if_complete(self, run_id: str, finished_at: str) -> bool:
        """Mark the run's ingestion published once every resource is complete.

        Both the ingest (after its own resources) and each worker (after its work item) call
        this after their last write; reading the manifest consistently after writing, the last
        one of them to finish sees everything complete. The update is conditional, so only one
        of them marks it, and never a run already declared failed.
        """
        return self.manifests.finish_run_if_complete(run_id, finished_at)

    def set_status_unless_final(self, run_id: str, status: str) -> None:
        """Record an ingest status that is not final (e.g. `fanned_out`) unless the run's
        ingestion is already published or failed (a worker may have finished it meanwhile)."""
        self.manifests.set_status_unless_final(run_id, status)

    def _manifest(self, run_id: str) -> dict[str, Any]:
        return self.manifests.get(run_id) or {}

    def pages(self, run_id: str, after: str | None = None) -> Iterator[PageLedger]:
        """Every ledger page of a run, one DynamoDB query page at a time; only the pages after
        the `page_id` `after` when given (a reconciliation resuming where it stopped)."""
        paginator = self.client.get_paginator("query")
        current: PageLedger | None = None
        condition = "run_id = :run"
        values: dict[str, Any] = {":run": {"S": run_id}}
        if after is not None:  # `~~` sorts after every part `~NNN` of that page
            condition += " AND page_id > :after"
            values[":after"] = {"S": f"{after}{PART_SEPARATOR}{PART_SEPARATOR}"}
        for response in paginator.paginate(
            TableName=self.pages_table,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        ):
            for item in response.get("Items", []):
                if current is not None and PageLedger.is_part(item):
                    current.entries.extend(PageLedger.decode_entries(item))
                    continue
                if current is not None:
                    yield current
                current = PageLedger.from_item(item)
        if current is not None:
            yield current

    def _write_ledger(self, run_id: str, pages: Sequence[PageLedger]) -> None:
        """BatchWriteItem in chunks of 25, resending UnprocessedItems with backoff."""
        items = [item for page in pages for item in page.to_items(run_id)]
        for start in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            write_all(self.client, self.pages_table, requests, attempts=12, sleep=self.sleep)


@dataclass
class ResourceCheckpoint:
    """Pages of one resource waiting for their checkpoint, committed after a flush.

    `flush` sends what the publisher buffers; it runs before every commit, so the checkpoint
    never covers a record that is not in the stream yet.
    """

    progress: RunProgress
    run_id: str
    resource: str
    checkpoint: int
    flush: Callable[[], None]
    pending: list[PageLedger] = field(default_factory=list)

    @property
    def next_page(self) -> int:
        return self.checkpoint + 1

    def add(self, page: PageLedger) -> None:
        self.pending.append(page)
        if ledger_full(self.pending):
            self.commit()

    def commit(self, *, complete: bool = False) -> None:
        if not self.pending and not complete:
            return
        self.flush()
        self.checkpoint = self.progress.commit(
            self.run_id, self.resource, self.pending, self.checkpoint, complete=complete
        )
        self.pending = []
