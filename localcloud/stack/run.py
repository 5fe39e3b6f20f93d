"""One run on the local cloud: fire the ingestion schedule, drive the deployed mappings until
everything is drained, wait for the verdict and read the run back; and the redrive after one.

The run is loaded when the pipeline asks for its verdict
(`chalicelib.reconcile.verdict_request`): the reconcile function runs then, as Lambda runs the
async invocation. Once the drivers have drained everything, a run it has not settled (no
request came, or it came early) is settled by firing the reconcile schedule, as on AWS the
schedule would (`localcloud/run_report.py` reads the verdict and the counts back).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.deadletter.redrive import RedriveReport, new_redrive_id
from chalicelib.observability.logging import SERVICE
from chalicelib.runs.ledger import run_id_for_event
from localcloud.deployment import DeploymentError
from localcloud.run_progress import ProgressCallback, ProgressHandler
from localcloud.run_report import (
    RunReport,
    receive_dataset_updated,
    reconcile_run,
    verdict_timings,
    verdict_trigger,
)
from localcloud.stack.environment import REGION
from localcloud.stack.functions import function_context
from localcloud.triggers.async_invoker import AsyncInvoker
from localcloud.triggers.kinesis import KinesisEventSourceMapping, ShardProgress
from localcloud.triggers.lambda_runtime import scheduled_event
from localcloud.triggers.sqs import SqsEventSourceMapping

if TYPE_CHECKING:
    from localcloud.stack.cloud import LocalCloud


def run_pipeline(cloud: LocalCloud, progress: ProgressCallback | None = None) -> RunReport:
    """Fire the schedule once, drive the stream until drained, and reconcile the counts."""
    import app  # the Chalice app: imported after the environment points at the cloud

    assert cloud.provisioned is not None
    cloud.apply_event_source()
    deployed = cloud.apply_deployment()
    settings = cloud.settings
    window_start = cloud.monitoring.begin_run()
    started = time.monotonic()
    progress_handler = ProgressHandler(progress or (lambda *_: None))
    pipeline_logger = logging.getLogger(SERVICE)
    pipeline_logger.addHandler(progress_handler)
    service = cloud.lambda_service()
    service.on_log = progress_handler.handle
    lambda_events = aws.client("lambda").meta.events
    if not service.processes:  # the handlers' async invocations, made in this process
        lambda_events.register("before-call.lambda.Invoke", service.capture_invoke)
    calls_before = service.aws_calls()
    reconciles_before = len(service.reconciles)
    if deployed.work is None:
        raise DeploymentError("no enabled event-source mapping from the work queue")
    # cold starts on the run's critical path: the ingest and one load per shard now; the
    # reconcile function once the ingest is done (it imports while the load drains); the
    # fan-out workers on their first work item, as Lambda starts them
    service.warm({"ingest": 1, "load": len(shard_ids(cloud))})

    producer_done = threading.Event()
    ingest_outcome: dict[str, Any] = {}
    event = scheduled_event(deployed.schedule("ingest"), REGION)
    chaos = cloud.chaos
    ingest_name = deployed.function("ingest").name
    invoker = AsyncInvoker(
        handler=service.handler("ingest", app.ingest),
        lambda_client=aws.client("lambda"),
        function_name=ingest_name,
        region=REGION,
        max_invocations=settings.ingest_max_invocations + 10,
        context_factory=(
            (lambda number: chaos.ingest_context_for(number, ingest_name, REGION))
            if chaos is not None and not service.processes
            else function_context(deployed, "ingest")
        ),
    )
    service.ingest_queue = invoker.enqueue

    ingest_done = threading.Event()

    def fire_schedule() -> None:
        try:
            last = invoker.run(event)
            if last.error is not None:
                ingest_outcome["error"] = last.error
            else:
                ingest_outcome["result"] = last.result
        finally:
            ingest_done.set()
            service.warm({"reconcile": 1})

    if deployed.work.batch_size != 1:
        raise DeploymentError(
            f"the work queue's mapping has batch size {deployed.work.batch_size}: the local "
            "SQS trigger delivers one message per invocation, as app.py deploys it"
        )
    worker = deployed.function(deployed.work.function)
    work = SqsEventSourceMapping(
        sqs=aws.client("sqs"),
        queue_url=deployed.work.queue_url,
        handler=service.handler("ingest_worker", app.ingest_worker),
        function_name=worker.name,
        concurrency=cloud.workers,
        region=REGION,
        memory_mb=worker.memory_mb,
        timeout_s=worker.timeout_s,
    )

    def run_workers() -> None:
        """Fan-out workers poll until the ingest is done and the work queue is empty."""
        try:
            work.run(ingest_done)
        finally:
            producer_done.set()

    load_handler: Any = app.load
    if chaos is not None and not service.processes:
        wiring.load_dependencies()  # builds the sinks, hence PynamoDB's clients, to hook
        chaos.attach(_aws_clients())
        load_handler = chaos.wrap_load(load_handler, lambda: chaos.attach(_aws_clients()))
    # Lambda sees a crash injected by chaos as the function's error, like any other
    mapping = load_mapping(cloud, service.handler("load", load_handler))
    producer = threading.Thread(target=fire_schedule, name="ingest", daemon=True)
    producer.start()
    workers = threading.Thread(target=run_workers, name="workers", daemon=True)
    workers.start()
    try:
        shards = mapping.run(producer_done)
        producer.join()
        workers.join()
        remember_positions(cloud.positions, shards)
    finally:
        if chaos is not None and not service.processes:
            chaos.detach()
        pipeline_logger.removeHandler(progress_handler)
        service.on_log = None
        service.ingest_queue = None
    pipeline_s = time.monotonic() - started

    run_id = run_id_for_event(event)
    service.wait_reconciles()  # a verdict request of the pipeline, still running
    lambda_events.unregister("before-call.lambda.Invoke", service.capture_invoke)
    report = reconcile_run(cloud, run_id, ingest_outcome, shards, work.progress, backstop_only=True)
    invocations = service.reconciles[reconciles_before:]
    if report.status == "succeeded":
        receive_dataset_updated(cloud, report)
    report.metrics, report.alarms = cloud.monitoring.end_run(window_start)
    report.ingest_invocations = len(invoker.invocations)
    if chaos is not None:
        counts = chaos.counts()
        for name, count in service.chaos_counts().items():
            counts[name] = counts.get(name, 0) + count
        report.chaos = counts
    report.timings = {
        "total_s": round(cloud.started_s + time.monotonic() - started, 3),
        "pipeline_s": round(pipeline_s, 3),
        **verdict_timings(run_id, invocations, started),
    }
    report.verdict_trigger = verdict_trigger(run_id, invocations)
    if service.processes:
        calls = service.aws_calls()
        report.aws_calls = {
            function: calls[function] - calls_before.get(function, 0)
            for function in ("ingest", "ingest_worker", "load", "reconcile")
        }
    return report


def shard_ids(cloud: LocalCloud) -> list[str]:
    deployed = cloud.read_deployment()
    if deployed.kinesis is None:
        return []
    stream = deployed.kinesis.stream_arn.rsplit("/", 1)[-1]
    shards = aws.client("kinesis").list_shards(StreamName=stream)["Shards"]
    return [shard["ShardId"] for shard in shards]


def load_mapping(cloud: LocalCloud, handler: Any) -> KinesisEventSourceMapping:
    """The load trigger as deployed, continuing where the previous drain stopped."""
    deployed = cloud.read_deployment()
    trigger = deployed.kinesis
    if trigger is None:
        raise DeploymentError("no enabled event-source mapping from the stream to load")
    if trigger.settings.parallelization_factor != 1:
        raise DeploymentError(
            f"the Kinesis mapping is deployed with ParallelizationFactor "
            f"{trigger.settings.parallelization_factor}: the local driver runs one batch per "
            "shard at a time (and the DynamoDB sink relies on it)"
        )
    function = deployed.function(trigger.function)
    return KinesisEventSourceMapping(
        kinesis=aws.client("kinesis"),
        stream_name=trigger.stream_arn.rsplit("/", 1)[-1],
        stream_arn=trigger.stream_arn,
        handler=handler,
        function_name=function.name,
        region=REGION,
        settings=trigger.settings,
        sqs=aws.client("sqs"),
        destination_url=trigger.destination_url,
        memory_mb=function.memory_mb,
        timeout_s=function.timeout_s,
        progress={
            shard_id: ShardProgress(shard_id, last_sequence=sequence)
            for shard_id, sequence in cloud.positions.items()
        },
    )


def remember_positions(positions: dict[str, str], shards: dict[str, ShardProgress]) -> None:
    """Where the load trigger stopped on each shard: the next drain continues there."""
    for shard_id, shard in shards.items():
        if shard.last_sequence:
            positions[shard_id] = shard.last_sequence


def redrive(
    cloud: LocalCloud, run_id: str, sources: tuple[str, ...]
) -> tuple[RedriveReport, RunReport]:
    """Redrive what `run_id` set aside (the code an operator runs against AWS), drain the
    stream again (without chaos) and reconcile the run anew."""
    import app

    report = RedriveReport(new_redrive_id())
    redriver = wiring.redriver(cloud.settings)
    if "quarantine" in sources:
        redriver.redrive_quarantine(report, run_id=run_id)
    if "failures" in sources:
        redriver.redrive_failures(report)
    drained = threading.Event()
    drained.set()
    load = cloud.lambda_service().handler("load", app.load, chaos=False)
    shards = load_mapping(cloud, load).run(drained)
    remember_positions(cloud.positions, shards)
    return report, reconcile_run(cloud, run_id, {}, shards)


def fire_reconcile(cloud: LocalCloud) -> dict[str, Any]:
    """Fire the reconcile schedule once: the deployed function settles the pending runs,
    writes their run-outcome metrics and publishes DatasetUpdated. Returns its answer."""
    deployed = cloud.read_deployment()
    event = scheduled_event(deployed.schedule("reconcile"), REGION)
    invocation = cloud.lambda_service().fire_reconcile(event)
    if invocation.error is not None or invocation.answer is None:
        raise RuntimeError(invocation.error or "the reconcile function answered nothing")
    return invocation.answer


def _aws_clients() -> list[Any]:
    """The pipeline's AWS clients: boto3's cached ones and PynamoDB's (chaos hooks them)."""
    from chalicelib.load.sinks.dynamodb import ROW_MODELS

    clients = [aws.client("kinesis"), aws.client("dynamodb")]
    for model in ROW_MODELS.values():
        clients.append(model._get_connection().connection.client)
    return clients
