"""The report of one local run, read back from what the reconcile function wrote.

`reconcile_run` fires the reconcile schedule (unless the run's verdict request already settled
it) and builds the `RunReport`: the verdict as the reconcile function wrote it in the runs
table, the counts read back from the stores, and what the local drivers saw (ingest errors,
records sent to the on-failure queue) as errors. It decides nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.reconcile.verdict import SETTLED
from chalicelib.runs import counters
from chalicelib.runs.manifest import schema_drift
from localcloud.triggers.kinesis import ShardProgress
from localcloud.triggers.lambda_service import ReconcileInvocation
from localcloud.triggers.sqs import WorkerProgress

if TYPE_CHECKING:
    from localcloud.stack import LocalCloud


@dataclass
class RunReport:
    """What one local run did, with counts read back from the emulated AWS APIs."""

    run_id: str
    status: str
    entities: dict[str, dict[str, Any]]
    timings: dict[str, float]
    shards: dict[str, ShardProgress] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    event: dict[str, Any] | None = None
    """The DatasetUpdated event as a subscriber received it (only after a succeeded run)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Read back from CloudWatch: {metric: value summed over the run's entities}."""
    alarms: dict[str, str] = field(default_factory=dict)
    """{alarm name: state} after the run, as the local evaluator set them."""
    chaos: dict[str, int] | None = None
    ingest_invocations: int = 0
    reconcile: dict[str, Any] | None = None
    """The reconcile function's answer to the sweep that settled the run."""
    schema_drift: dict[str, list[str]] = field(default_factory=dict)
    """{entity: [unknown field, ...]}, read back from the run manifest the ingest wrote."""
    aws_calls: dict[str, int] | None = None
    """{function: AWS API calls its processes made for this run} (worker-process mode only)."""
    verdict_trigger: str | None = None
    """What ran the reconcile invocation that settled the run: "request" (the pipeline asked
    once the run was loaded) or "schedule" (the backstop)."""

    def as_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "status": self.status,
            "run_id": self.run_id,
            "entities": self.entities,
            "timings": self.timings,
            "metrics": self.metrics,
            "alarms": self.alarms,
            "schema_drift": self.schema_drift,
        }
        if self.chaos is not None:
            summary["chaos"] = self.chaos
        if self.errors:
            summary["errors"] = self.errors
        if self.event is not None:
            summary["event"] = self.event
        if self.reconcile is not None:
            summary["reconcile"] = self.reconcile
        if self.aws_calls is not None:
            summary["aws_calls"] = self.aws_calls
        if self.verdict_trigger is not None:
            summary["verdict_trigger"] = self.verdict_trigger
        return summary


def reconcile_run(
    cloud: LocalCloud,
    run_id: str,
    ingest_outcome: dict[str, Any],
    shards: dict[str, ShardProgress],
    work: WorkerProgress | None = None,
    *,
    backstop_only: bool = False,
) -> RunReport:
    """Fire the reconcile schedule and report the run: its verdict as the reconcile function
    wrote it in the runs table, its counts read back from the stores, and what the local
    drivers saw (ingest errors, records sent to the on-failure queue) as errors.
    `backstop_only`: the schedule fires only when the run is not settled yet (its verdict
    request came early, or never)."""
    settings = cloud.settings
    errors: list[str] = []
    answer: dict[str, Any] | None = None
    settled = (wiring.manifests(settings).get(run_id) or {}).get("status") in SETTLED
    service = cloud.lambda_service()
    requested = [
        invocation.answer
        for invocation in service.reconciles
        if invocation.trigger == "request"
        and invocation.answer
        and invocation.answer.get("requested") == run_id
    ]
    if backstop_only and settled and requested:
        answer = requested[-1]
    else:
        try:
            answer = cloud.fire_reconcile()
        except Exception as error:  # the function failed: Lambda would retry it later
            errors.append(f"reconcile: {type(error).__name__}: {error}")
    manifest = wiring.manifests(settings).get(run_id) or {}
    quarantined = wiring.quarantine(settings).count_by_entity(run_id)
    sinks = wiring.build_sinks(settings)
    entities: dict[str, dict[str, Any]] = {}
    if "error" in ingest_outcome:
        errors.append(f"ingest: {ingest_outcome['error']}")
    for shard in shards.values():
        if shard.discarded_records:
            errors.append(
                f"{shard.shard_id}: {shard.discarded_records} records given up on from "
                f"sequence {shard.stuck_at} ({shard.failure_messages} batches described in "
                f"the on-failure queue; redrive them)"
            )
        if shard.error:
            errors.append(f"{shard.shard_id}: {shard.error}")
    if work is not None:
        errors.extend(f"ingest worker: {error}" for error in work.errors)
        dead = dead_work_items(cloud)
        if dead:
            errors.append(
                f"{dead} ingest work items failed for good (in the dead-letter queue); "
                f"last errors: {work.last_failures}"
            )
    reasons = str(manifest.get("reconcile_reasons", ""))
    if reasons and reasons != "balanced":
        errors.extend(reason.strip() for reason in reasons.split(";") if reason.strip())
    for entity in settings.resource_list:
        counts: dict[str, Any] = {
            "fetched": int(manifest.get(counters.fetched(entity), 0)),
            "published": int(manifest.get(counters.published(entity), 0)),
            "unchanged": int(manifest.get(counters.unchanged(entity), 0)),
            "quarantined": int(quarantined.get(entity, 0)),
            "work_items": int(manifest.get(f"work_items.{entity}", 0)),
            "written": {
                sink.name: int(manifest.get(counters.written(sink.name, entity), 0))
                for sink in sinks
            },
            "stored": {sink.name: sink.count(entity) for sink in sinks},
        }
        counts["superseded"] = int(manifest.get(counters.reconciled("superseded", entity), 0))
        missing = int(manifest.get(counters.reconciled("missing", entity), 0))
        if missing:
            counts["missing"] = missing
            counts["missing_records"] = orjson.loads(
                str(manifest.get(f"missing_records.{entity}", "[]"))
            )
        entities[entity] = counts
    # the verdict is the reconcile function's, as it wrote it; a run it has not settled
    # (it never saw it, or it failed) is not a success
    verdict = str(manifest.get("status", "unknown"))
    status = "succeeded" if verdict == "succeeded" else "failed"
    if verdict not in ("succeeded", "failed"):
        errors.append(f"the reconcile function left run {run_id} {verdict}")
    return RunReport(
        run_id=run_id,
        status=status,
        entities=entities,
        timings={},
        shards=shards,
        errors=errors,
        reconcile=answer,
        schema_drift=schema_drift(manifest),
    )


def dead_work_items(cloud: LocalCloud) -> int:
    """Messages in the work queue's dead-letter queue: items no worker could finish."""
    assert cloud.provisioned is not None
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=cloud.provisioned.work_dead_letter_queue_url,
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def receive_dataset_updated(cloud: LocalCloud, report: RunReport) -> None:
    """The DatasetUpdated event the reconcile function published, as the subscriber (an
    EventBridge rule with an SQS target) received it."""
    if cloud.events is None:
        return
    report.event = cloud.events.receive(report.run_id)
    if report.event is None:
        report.errors.append(
            "DatasetUpdated: the reconcile function settled the run as succeeded but the "
            "subscriber's queue received no event"
        )


def verdict_timings(
    run_id: str, invocations: list[ReconcileInvocation], started: float
) -> dict[str, float]:
    """`verdict_s`: from the schedule firing to the end of the reconcile invocation that wrote
    the run's verdict; `reconcile_s`: the reconcile function's time spent on the run (every
    invocation that worked on it: an early request that found it not loaded yet counts too).
    Neither when no invocation settled the run."""
    timings: dict[str, float] = {}
    worked = [
        invocation
        for invocation in invocations
        if invocation.error is not None or run_id in (invocation.answer or {}).get("runs", {})
    ]
    if worked:
        timings["reconcile_s"] = round(sum(i.duration_s for i in worked), 3)
    settling = sorted(
        (
            invocation
            for invocation in worked
            if (invocation.answer or {}).get("runs", {}).get(run_id) in SETTLED
            and invocation.ended is not None
        ),
        key=lambda invocation: invocation.ended or 0.0,
    )
    if settling and settling[0].ended is not None:
        timings["verdict_s"] = round(settling[0].ended - started, 3)
    return timings


def verdict_trigger(run_id: str, invocations: list[ReconcileInvocation]) -> str | None:
    """Which trigger's reconcile invocation settled the run first."""
    for invocation in sorted(invocations, key=lambda i: i.ended or float("inf")):
        if (invocation.answer or {}).get("runs", {}).get(run_id) in SETTLED:
            return invocation.trigger
    return None
