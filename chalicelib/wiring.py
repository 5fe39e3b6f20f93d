"""Builds each handler's dependencies once per process from the settings.

Lambda reuses a warm process across invocations, so clients and connections are made once.
`reset()` forgets them, for a process that changes its environment (the local cloud, tests).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from chalicelib.aws import clients as aws
from chalicelib.deadletter.quarantine import Quarantine
from chalicelib.ingest.changes import ChangeDetector
from chalicelib.ingest.context import IngestDependencies
from chalicelib.ingest.fanout import WorkQueue
from chalicelib.ingest.source_session import build_session
from chalicelib.load.consumer import LoadDependencies
from chalicelib.load.evidence import LoadEvidence
from chalicelib.load.sinks import Sink
from chalicelib.runs.ledger import RunProgress
from chalicelib.runs.manifest import RunManifests
from chalicelib.settings import Settings, get_settings
from chalicelib.stream.publisher import KinesisPublisher

if TYPE_CHECKING:
    from chalicelib.deadletter.redrive import Redriver
    from chalicelib.reconcile.verdict import Reconciler
    from chalicelib.reconcile.verdict_request import VerdictRequests
    from chalicelib.runs.outcome import RunOutcomes


def manifests(settings: Settings) -> RunManifests:
    return RunManifests(aws.client("dynamodb"), settings.table_name("runs"))


def progress(settings: Settings) -> RunProgress:
    return RunProgress(
        aws.client("dynamodb"), settings.table_name("runs"), settings.table_name("run-pages")
    )


def reconciler(settings: Settings) -> Reconciler:
    from chalicelib.reconcile.verdict import Reconciler

    return Reconciler(
        progress=progress(settings),
        quarantine=quarantine(settings),
        sinks=build_sinks(settings),
        manifests=manifests(settings),
        max_quarantine_ratio=settings.max_quarantine_ratio,
        evidence=load_evidence(settings),
    )


def verdict_requests(settings: Settings, context: Any) -> VerdictRequests:
    """The early verdict request of the function whose Lambda `context` is given."""
    from chalicelib.reconcile.verdict_request import VerdictRequests

    return VerdictRequests(manifests(settings), context)


def run_outcomes(settings: Settings) -> RunOutcomes:
    from chalicelib.runs.outcome import RunOutcomes

    return RunOutcomes(
        manifests=manifests(settings),
        quarantine=quarantine(settings),
        events=aws.client("events"),
        bus_name=settings.event_bus_name,
        sinks=settings.sink_list,
    )


def redriver(settings: Settings) -> Redriver:
    from chalicelib.deadletter.failures import failure_queue_name
    from chalicelib.deadletter.redrive import Redriver

    sqs = aws.client("sqs")
    return Redriver(
        publisher=publisher(settings),
        quarantine=quarantine(settings),
        manifests=manifests(settings),
        sqs=sqs,
        kinesis=aws.client("kinesis"),
        failure_queue_url=sqs.get_queue_url(QueueName=failure_queue_name(settings))["QueueUrl"],
    )


def publisher(settings: Settings, *, background: bool = False) -> KinesisPublisher:
    """A publisher of its own: its counters belong to one run or redrive."""
    return KinesisPublisher(
        client=aws.client("kinesis"),
        stream_name=settings.stream_name,
        max_attempts=settings.put_records_max_attempts,
        backoff_s=settings.put_records_backoff_s,
        background=background,
    )


def change_detector(settings: Settings) -> ChangeDetector | None:
    """Reads the fingerprints kept in the DynamoDB rows; None when change detection is off or
    there is no DynamoDB sink to keep them (then every run publishes everything)."""
    if not settings.change_detection or "dynamodb" not in settings.sink_list:
        return None
    from chalicelib.load.sinks.dynamodb import DynamoDBSink

    return ChangeDetector(DynamoDBSink(settings).stored_fingerprints, settings.sink_list)


def work_queue(settings: Settings) -> WorkQueue | None:
    """The fan-out queue, or None when resources are never split."""
    if settings.pages_per_worker <= 0:
        return None
    return WorkQueue(aws.client("sqs"), settings.work_queue)


def quarantine(settings: Settings) -> Quarantine:
    return Quarantine(aws.client("s3"), settings.quarantine_bucket)


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks named in the settings, DynamoDB last: the load writes them in this order, and a
    DynamoDB row's change-detection fingerprint must mean every other sink has the content."""
    sinks: list[Sink] = []
    for name in sorted(settings.sink_list, key=lambda sink: sink == "dynamodb"):
        if name == "dynamodb":
            from chalicelib.load.sinks.dynamodb import DynamoDBSink

            sinks.append(DynamoDBSink(settings))
        elif name == "postgres":
            from chalicelib.load.sinks.postgres import PostgresSink

            sinks.append(PostgresSink(settings))
        else:
            raise ValueError(f"unknown sink {name!r} in PIPELINE_SINKS")
    return sinks


def ingest_dependencies() -> IngestDependencies:
    """Fresh per invocation: the publisher's counters belong to one run."""
    settings = get_settings()
    return IngestDependencies(
        settings=settings,
        session=_session(),
        publisher=publisher(settings, background=True),
        quarantine=quarantine(settings),
        manifests=manifests(settings),
        progress=progress(settings),
        changes=_change_detector(),
        work_queue=work_queue(settings),
    )


@lru_cache(maxsize=1)
def _change_detector() -> ChangeDetector | None:
    """One per process: it holds the DynamoDB sink's reader and its thread pool."""
    return change_detector(get_settings())


@lru_cache(maxsize=1)
def _session():  # type: ignore[no-untyped-def]
    return build_session(get_settings())


@lru_cache(maxsize=1)
def load_dependencies() -> LoadDependencies:
    settings = get_settings()
    return LoadDependencies(
        sinks=build_sinks(settings),
        quarantine=quarantine(settings),
        manifests=manifests(settings),
        evidence=load_evidence(settings),
    )


def load_evidence(settings: Settings) -> LoadEvidence:
    return LoadEvidence(aws.client("dynamodb"), settings.table_name("run-pages"))


def reset() -> None:
    """Forget settings, clients and connections (after the environment changed)."""
    get_settings.cache_clear()
    aws.client.cache_clear()
    _session.cache_clear()
    _change_detector.cache_clear()
    load_dependencies.cache_clear()
    from chalicelib.load.sinks import postgres_connection

    postgres_connection.close_all()
