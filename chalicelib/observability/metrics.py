"""What the pipeline records: one function per event worth a metric, and the process's recorder.

Each function names its catalogued metrics (`chalicelib/observability/catalogue.py`) and
dimensions once, so the ingest, the load and the reconciliation never spell a metric
themselves. Values go to `metrics` (`chalicelib/observability/emf.py`), which handlers flush
with `@metrics.log_metrics`; recorders that end a step flush at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from chalicelib.model.envelope import Envelope
from chalicelib.observability.emf import PipelineMetrics

metrics = PipelineMetrics()
"""The process's recorder; handlers flush it with `@metrics.log_metrics`."""


def record_resource_ingested(
    entity: str,
    *,
    fetched: int,
    published: int,
    quarantined: int,
    pages: int,
    put_records_failed: int,
    duration_s: float,
    unchanged: int = 0,
) -> None:
    """The ingest side of one resource in one run (or one work item), written at once.

    Zeros are recorded so that graphs show 0, not a gap. Writing per resource (not when the
    handler returns) keeps what was done when a long run later times out.
    """
    metrics.add_metric("RecordsFetched", fetched, Entity=entity)
    metrics.add_metric("RecordsPublished", published, Entity=entity)
    metrics.add_metric("RecordsSkippedUnchanged", unchanged, Entity=entity)
    metrics.add_metric("RecordsQuarantined", quarantined, Entity=entity, Step="ingest")
    metrics.add_metric("PagesFetched", pages, Entity=entity)
    metrics.add_metric("PutRecordsFailedRecords", put_records_failed, Entity=entity)
    metrics.add_metric("FetchDuration", duration_s, Entity=entity)
    metrics.flush_metrics()


def record_api_retry(entity: str, status: str) -> None:
    """One API request that will be retried, labelled by HTTP status or failure kind."""
    metrics.add_metric("ApiRetries", 1, Entity=entity, Status=status)


def record_api_error(entity: str, status: int | None) -> None:
    """A resource whose ingestion failed on the API after every retry."""
    metrics.add_metric("ApiErrors", 1, Entity=entity, Status=str(status or "none"))


def record_sink_write(
    entity: str,
    sink: str,
    envelopes: Sequence[Envelope],
    written: int,
    duration_s: float,
    now: datetime | None = None,
) -> None:
    """One successful sink write: written vs unchanged, its duration, each record's latency."""
    moment = now or datetime.now(UTC)
    metrics.add_metric("RecordsWritten", written, Entity=entity, Sink=sink)
    metrics.add_metric("RecordsUnchanged", len(envelopes) - written, Entity=entity, Sink=sink)
    metrics.add_metric("LoadDuration", duration_s * 1000.0, Entity=entity, Sink=sink)
    latencies = [latency_ms(envelope.fetched_at, moment) for envelope in envelopes]
    metrics.add_values(
        "EndToEndLatency",
        [value for value in latencies if value is not None],
        Entity=entity,
        Sink=sink,
    )


def record_sink_failure(entity: str, sink: str, records: int) -> None:
    metrics.add_metric("RecordsFailed", records, Entity=entity, Sink=sink)


def record_quarantined(entity: str, step: str, count: int = 1) -> None:
    metrics.add_metric("RecordsQuarantined", count, Entity=entity, Step=step)


def record_quarantine_backlog(objects: int) -> None:
    """Objects in the quarantine bucket now; call after a run and after a redrive."""
    metrics.add_metric("QuarantineBacklog", objects)


def record_run_outcome(
    *,
    succeeded: bool,
    differences: Mapping[str, int],
    quarantine_backlog: int | None = None,
    last_success_at: datetime | None = None,
    now: datetime | None = None,
) -> None:
    """The verdict of a run's reconciliation, written at once (it ends the run).

    `differences` maps each entity to |fetched - (stored + superseded + quarantined)|.
    `last_success_at` is when the previous fully successful run ended (None if there never
    was one); Freshness is 0 after a success, its age otherwise, and not recorded when it is
    unknown.
    """
    moment = now or datetime.now(UTC)
    metrics.add_metric("RunSucceeded", 1 if succeeded else 0)
    metrics.add_metric("RunFailed", 0 if succeeded else 1)
    for entity, difference in differences.items():
        metrics.add_metric("ReconciliationDifference", abs(difference), Entity=entity)
    if succeeded:
        metrics.add_metric("Freshness", 0)
    elif last_success_at is not None:
        metrics.add_metric("Freshness", max(0.0, (moment - last_success_at).total_seconds()))
    if quarantine_backlog is not None:
        record_quarantine_backlog(quarantine_backlog)
    metrics.flush_metrics()


def record_run_balance(
    *, superseded: Mapping[str, int], quality_failures: Sequence[str] = ()
) -> None:
    """What the reconciliation of a settled run found besides its verdict: superseded records
    per entity, and the entities that failed the quality gate (written at once)."""
    for entity, count in superseded.items():
        metrics.add_metric("RecordsSuperseded", count, Entity=entity)
        metrics.add_metric(
            "QualityGateFailed", 1 if entity in quality_failures else 0, Entity=entity
        )
    metrics.flush_metrics()


def record_unknown_fields(entity: str, items: int) -> None:
    """Items of a page that carried fields the contract does not know (schema drift)."""
    metrics.add_metric("UnknownFields", items, Entity=entity)


def latency_ms(fetched_at: str, now: datetime) -> float | None:
    """Milliseconds since `fetched_at` (ISO 8601, UTC if naive); None if it does not parse."""
    try:
        moment = datetime.fromisoformat(fetched_at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (now - moment).total_seconds() * 1000.0)
