"""Builds each handler's dependencies once per process from the settings.

Lambda reuses a warm process across invocations, so clients and connections are made once.
`reset()` forgets them, for a process that changes its environment (the local cloud, tests).
"""

from __future__ import annotations

from functools import lru_cache

from chalicelib import aws
from chalicelib.changes import ChangeDetector, SinkRowChangeDetector
from chalicelib.fanout import WorkQueue
from chalicelib.ingest import IngestDependencies
from chalicelib.load import LoadDependencies
from chalicelib.manifest import RunManifests
from chalicelib.quarantine import Quarantine
from chalicelib.settings import Settings, get_settings
from chalicelib.sinks import Sink
from chalicelib.source import build_session
from chalicelib.stream import KinesisPublisher


def manifests(settings: Settings) -> RunManifests:
    return RunManifests(aws.client("dynamodb"), settings.table_name("runs"))


def quarantine(settings: Settings) -> Quarantine:
    return Quarantine(aws.client("s3"), settings.quarantine_bucket)


def change_detector(settings: Settings) -> ChangeDetector | None:
    """The state's reader/writer, or None when change detection is off.

    With DynamoDB as the only sink the state is the sink's own rows (no extra writes);
    otherwise the state table, written once every sink has processed a record.
    """
    if not settings.change_detection:
        return None
    if settings.sink_list == ["dynamodb"]:
        return SinkRowChangeDetector(
            aws.client("dynamodb"), settings.table_prefix, settings.sink_list
        )
    return ChangeDetector(
        aws.client("dynamodb"),
        settings.table_name("state"),
        settings.sink_list,
        concurrency=settings.write_concurrency,
    )


def work_queue(settings: Settings) -> WorkQueue | None:
    """The fan-out queue, or None when resources are never split."""
    if settings.pages_per_worker <= 0:
        return None
    return WorkQueue(aws.client("sqs"), settings.work_queue)


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks named in the settings, in order."""
    sinks: list[Sink] = []
    for name in settings.sink_list:
        if name == "dynamodb":
            from chalicelib.sinks.dynamodb import DynamoDBSink

            sinks.append(DynamoDBSink(settings))
        else:
            raise ValueError(f"unknown sink {name!r} in PIPELINE_SINKS")
    return sinks


def ingest_dependencies() -> IngestDependencies:
    """Fresh per invocation: the publisher's counters belong to one run."""
    settings = get_settings()
    return IngestDependencies(
        settings=settings,
        session=_session(),
        publisher=KinesisPublisher(
            client=aws.client("kinesis"),
            stream_name=settings.stream_name,
            max_attempts=settings.put_records_max_attempts,
            backoff_s=settings.put_records_backoff_s,
            background=True,
        ),
        quarantine=quarantine(settings),
        manifests=manifests(settings),
        changes=change_detector(settings),
        work_queue=work_queue(settings),
    )


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
        changes=change_detector(settings),
    )


def reset() -> None:
    """Forget settings, clients and connections (after the environment changed)."""
    get_settings.cache_clear()
    aws.client.cache_clear()
    _session.cache_clear()
    load_dependencies.cache_clear()
