"""Custom CloudWatch metrics of the pipeline, written as Embedded Metric Format (EMF) lines.

Lambda ships every stdout line to CloudWatch Logs, which turns EMF lines into metrics: no
PutMetricData call on the hot path, no extra IAM permission, no latency. Values collect in
memory during an invocation and are written when the handler returns (`@metrics.log_metrics`,
the Powertools decorator), one EMF line per dimension set.

Every metric lives in `NAMESPACE` with a `Pipeline` dimension (the stage's resource prefix,
e.g. `moovitamix-dev`) so that stages sharing an account never mix. `CATALOGUE` is the only
list of metrics: the recorder refuses any other name or dimension set, and the alarms, the
dashboard, the local report and `docs/operations.md` are checked against it.

Powertools' `Metrics` keeps ONE dimension set per process; per-entity dimensions need one EMF
blob per dimension set, so this module has a small provider (Powertools `BaseProvider`, so
`log_metrics` works as usual) that groups values by dimension set and lets Powertools'
`AmazonCloudWatchEMFProvider` serialize and validate each blob.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider import BaseProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from chalicelib.model.contract import Envelope
from chalicelib.settings import get_settings

NAMESPACE: Final = "MooVitamix/Pipeline"
MAX_VALUES_PER_BLOB: Final = 99
"""EMF allows 100 values per metric; Powertools prints on its own at 100, so stay below."""

PIPELINE: Final = "Pipeline"
ENTITY: Final = "Entity"
SINK: Final = "Sink"
STEP: Final = "Step"
STATUS: Final = "Status"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its unit, the dimension sets it is published with, and what it means.

    `dimension_sets[0]` is the full set every value carries; further sets are roll-ups of it
    (for example `[Pipeline]` for alarms on the whole pipeline). `distribution` keeps every
    value (latencies, durations, gauges) instead of summing them per invocation; `summary` is
    how a run's values combine into one number (`Sum` or `Maximum`).
    """

    name: str
    unit: MetricUnit
    dimension_sets: tuple[tuple[str, ...], ...]
    description: str
    distribution: bool = False
    summary: str = "Sum"

    @property
    def dimensions(self) -> tuple[str, ...]:
        return self.dimension_sets[0]


def _spec(
    name: str,
    unit: MetricUnit,
    dimension_sets: Sequence[Sequence[str]],
    description: str,
    *,
    distribution: bool = False,
    summary: str = "Sum",
) -> MetricSpec:
    return MetricSpec(
        name, unit, tuple(tuple(s) for s in dimension_sets), description, distribution, summary
    )


_BY_ENTITY = [(PIPELINE, ENTITY)]
_BY_SINK = [(PIPELINE, ENTITY, SINK)]

CATALOGUE: Final[dict[str, MetricSpec]] = {
    spec.name: spec
    for spec in (
        _spec("RecordsFetched", MetricUnit.Count, _BY_ENTITY, "items read from the API"),
        _spec(
            "RecordsPublished", MetricUnit.Count, _BY_ENTITY, "records put on the Kinesis stream"
        ),
        _spec(
            "RecordsSkippedUnchanged",
            MetricUnit.Count,
            _BY_ENTITY,
            "valid records the ingest did not publish: every sink already stores their content",
        ),
        _spec(
            "RecordsWritten",
            MetricUnit.Count,
            _BY_SINK,
            "records a sink stored (a new key or a newer version)",
        ),
        _spec(
            "RecordsUnchanged",
            MetricUnit.Count,
            _BY_SINK,
            "records a sink skipped: it already held that version or a newer one",
        ),
        _spec(
            "RecordsFailed",
            MetricUnit.Count,
            _BY_SINK,
            "records a sink could not write now; reported in batchItemFailures, re-delivered",
        ),
        _spec(
            "RecordsQuarantined",
            MetricUnit.Count,
            [(PIPELINE, ENTITY, STEP), (PIPELINE,)],
            "records put in the quarantine bucket (Step=ingest: broke the contract at fetch; "
            "Step=load: could not be decoded or stored)",
        ),
        _spec("PagesFetched", MetricUnit.Count, _BY_ENTITY, "API pages read"),
        _spec(
            "ApiRetries",
            MetricUnit.Count,
            [(PIPELINE, ENTITY, STATUS), (PIPELINE, ENTITY)],
            "API requests retried, by HTTP status or `timeout` / `connection`",
        ),
        _spec(
            "ApiErrors",
            MetricUnit.Count,
            [(PIPELINE, ENTITY, STATUS), (PIPELINE, ENTITY)],
            "resources whose ingestion failed on the API after every retry, by status",
        ),
        _spec(
            "PutRecordsFailedRecords",
            MetricUnit.Count,
            [(PIPELINE, ENTITY), (PIPELINE,)],
            "records Kinesis rejected in a PutRecords call (each is retried)",
        ),
        _spec(
            "FetchDuration",
            MetricUnit.Seconds,
            _BY_ENTITY,
            "time to fetch, validate and publish every page of a resource",
            distribution=True,
        ),
        _spec(
            "LoadDuration",
            MetricUnit.Milliseconds,
            _BY_SINK,
            "time of one sink write of one batch's records of an entity",
            distribution=True,
        ),
        _spec(
            "EndToEndLatency",
            MetricUnit.Milliseconds,
            _BY_SINK,
            "per record: time from its fetch to the sink holding it (one value per record)",
            distribution=True,
            summary="Maximum",
        ),
        _spec("RunSucceeded", MetricUnit.Count, [(PIPELINE,)], "1 per run that reconciled"),
        _spec(
            "RunFailed",
            MetricUnit.Count,
            [(PIPELINE,)],
            "1 per run that lost data, failed or did not reconcile",
        ),
        _spec(
            "ReconciliationDifference",
            MetricUnit.Count,
            [(PIPELINE, ENTITY), (PIPELINE,)],
            "records fetched by a run minus those stored or quarantined (absolute)",
            distribution=True,
        ),
        _spec(
            "Freshness",
            MetricUnit.Seconds,
            [(PIPELINE,)],
            "age of the last fully successful run, measured when a run ends",
            distribution=True,
            summary="Maximum",
        ),
        _spec(
            "RecordsSuperseded",
            MetricUnit.Count,
            [(PIPELINE, ENTITY), (PIPELINE,)],
            "fetched records a newer stored version or a repeat in the same run superseded "
            "(counted by the reconciliation: fetched = stored + superseded + quarantined)",
        ),
        _spec(
            "QualityGateFailed",
            MetricUnit.Count,
            [(PIPELINE, ENTITY), (PIPELINE,)],
            "1 per resource of a settled run whose quarantined share was above "
            "PIPELINE_MAX_QUARANTINE_RATIO (the run failed)",
        ),
        _spec(
            "UnknownFields",
            MetricUnit.Count,
            [(PIPELINE, ENTITY), (PIPELINE,)],
            "served items carrying fields the contract does not know (schema drift)",
        ),
        _spec(
            "QuarantineBacklog",
            MetricUnit.Count,
            [(PIPELINE,)],
            "objects waiting in the quarantine bucket (all runs), measured when a run ends",
            distribution=True,
            summary="Maximum",
        ),
    )
}

_BlobKey = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, ...], ...]]
"""(dimension name/value pairs, roll-up dimension sets): the values that share one EMF blob."""


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class PipelineMetrics(BaseProvider):
    """Collects metric values by dimension set and writes them as EMF lines on flush.

    Thread-safe: the ingest function records API retries from its fetch threads. `output`
    receives each EMF line (stdout by default, which Lambda forwards to CloudWatch Logs).
    """

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self.output: Callable[[str], None] = _print_line
        self._lock = threading.Lock()
        self._pending: dict[_BlobKey, dict[str, list[float]]] = {}

    def add_metric(self, name: str, value: float, **dimensions: str) -> None:
        """Record one value of a catalogued metric; the `Pipeline` dimension is added here."""
        self.add_values(name, [value], **dimensions)

    def add_values(self, name: str, values: Iterable[float], **dimensions: str) -> None:
        spec = CATALOGUE.get(name)
        if spec is None:
            raise ValueError(f"metric {name!r} is not in chalicelib.metrics.CATALOGUE")
        labelled = {PIPELINE: get_settings().table_prefix, **dimensions}
        if set(labelled) != set(spec.dimensions):
            raise ValueError(
                f"metric {name} takes dimensions {spec.dimensions}, got {sorted(labelled)}"
            )
        key: _BlobKey = (
            tuple((dimension, str(labelled[dimension])) for dimension in spec.dimensions),
            spec.dimension_sets[1:],
        )
        numbers = [float(value) for value in values]
        if not numbers:
            return
        with self._lock:
            metrics = self._pending.setdefault(key, {})
            current = metrics.setdefault(name, [])
            if spec.distribution:
                current.extend(numbers)
            elif current:
                current[0] += sum(numbers)
            else:
                current.append(sum(numbers))

    def serialize_metric_set(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """The EMF documents of everything pending, without clearing it."""
        with self._lock:
            pending = {key: {n: list(v) for n, v in m.items()} for key, m in self._pending.items()}
        return [blob for key, metrics in pending.items() for blob in self._blobs(key, metrics)]

    def flush_metrics(self, raise_on_empty_metrics: bool = False, **kwargs: Any) -> None:
        """Write every pending value as EMF lines and forget them."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if raise_on_empty_metrics and not pending:
            raise ValueError("no metrics were recorded")
        for key, metrics in pending.items():
            for blob in self._blobs(key, metrics):
                self.output(json.dumps(blob, separators=(",", ":")))

    def clear_metrics(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._pending = {}

    def add_cold_start_metric(self, context: Any) -> None:
        """Not used: Lambda's own `Invocations` and `InitDuration` tell cold starts apart."""

    def _blobs(self, key: _BlobKey, metrics: Mapping[str, list[float]]) -> list[dict[str, Any]]:
        """One EMF document per slice of at most `MAX_VALUES_PER_BLOB` values per metric."""
        dimensions, rollups = key
        longest = max(len(values) for values in metrics.values())
        labels = dict(dimensions)
        blobs: list[dict[str, Any]] = []
        for start in range(0, longest, MAX_VALUES_PER_BLOB):
            emf = AmazonCloudWatchEMFProvider(namespace=self.namespace, service="")
            for dimension, label in dimensions:
                emf.add_dimension(dimension, label)
            for rollup in rollups:
                emf.add_dimensions(**{dimension: labels[dimension] for dimension in rollup})
            # The metric set in Powertools' own shape, built at once: its `add_metric` formats
            # the growing value list into a debug message on every call (quadratic).
            metric_set = {
                name: {
                    "Unit": CATALOGUE[name].unit.value,
                    "StorageResolution": 60,
                    "Value": values[start : start + MAX_VALUES_PER_BLOB],
                }
                for name, values in metrics.items()
                if values[start : start + MAX_VALUES_PER_BLOB]
            }
            blobs.append(
                dict(
                    emf.serialize_metric_set(
                        metrics=metric_set, dimensions=emf.dimension_set, metadata={}
                    )
                )
            )
        return blobs


metrics = PipelineMetrics()
"""The process's recorder; handlers flush it with `@metrics.log_metrics`."""


# -- what the pipeline records ------------------------------------------------------------------


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
