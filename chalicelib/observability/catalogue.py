"""The catalogue of the pipeline's custom CloudWatch metrics: the only list of them.

Every metric lives in `NAMESPACE` with a `Pipeline` dimension (the stage's resource prefix,
e.g. `moovitamix-dev`) so that stages sharing an account never mix. The recorder
(`chalicelib/observability/emf.py`) refuses any name or dimension set that is not here, and the
alarms, the dashboard, the local report and `docs/operations.md` are checked against it. One
cohesive table, kept whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from aws_lambda_powertools.metrics import MetricUnit

NAMESPACE: Final = "MooVitamix/Pipeline"


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
