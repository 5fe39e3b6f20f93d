"""Alarms as code: every alarm of a stage as `PutMetricAlarm` arguments.

The definitions are plain data, so the same list is applied with boto3 (`apply_monitoring`)
and rendered into CloudFormation (`AWS::CloudWatch::Alarm` uses the same property names).
Each description says what the alarm means, what to do first, and where the runbook is.
Thresholds are counts of bad events (> 0) unless a lag or an age is watched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from chalicelib.observability.catalogue import CATALOGUE, NAMESPACE, PIPELINE
from infra.provision import WORK_QUEUE_MAX_RECEIVES as WORK_ITEM_ATTEMPTS
from infra.stage import StageResources

RUNBOOK: Final = "docs/operations.md"

AWS_SERVICE_METRICS: Final[dict[str, frozenset[str]]] = {
    "AWS/Lambda": frozenset({"Errors", "Throttles", "Invocations", "Duration", "IteratorAge"}),
    "AWS/Kinesis": frozenset({"GetRecords.IteratorAgeMilliseconds"}),
    "AWS/DynamoDB": frozenset({"ReadThrottleEvents", "WriteThrottleEvents"}),
    "AWS/SQS": frozenset(
        {"ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible"}
    ),
}
"""Metrics AWS publishes itself that the alarms and the dashboard use."""

GREATER: Final = "GreaterThanThreshold"


@dataclass(frozen=True)
class AlarmThresholds:
    """Tunable limits; the defaults suit a daily batch."""

    stale_margin_s: int = 3600
    """Added to the schedule interval: a run takes up to 15 min and may be retried."""
    stale_after_s: int | None = None
    """Overrides schedule + margin (for cron schedules that do not run daily)."""
    iterator_age_ms: int = 30 * 60 * 1000
    """The load function lags this far behind the stream: records wait half an hour."""


def alarm_definitions(
    resources: StageResources, topic_arn: str, thresholds: AlarmThresholds | None = None
) -> list[dict[str, Any]]:
    """`PutMetricAlarm` keyword arguments for every alarm of the stage, notifying `topic_arn`."""
    limits = thresholds or AlarmThresholds()
    r = resources
    pipeline = [{"Name": PIPELINE, "Value": r.prefix}]
    stale_s = limits.stale_after_s or r.stale_after_s(limits.stale_margin_s)
    stale_period = 300 if stale_s <= 86400 else 3600
    stale_periods = math.ceil(stale_s / stale_period)
    if stale_period * stale_periods > 7 * 86400:
        raise ValueError("a stale window longer than 7 days cannot be alarmed on")

    alarms: list[dict[str, Any]] = [
        _alarm(
            r,
            "pipeline-stale",
            f"No successful run of the {r.prefix} pipeline for {_hours(stale_s)} "
            "(schedule + margin): the data is getting old. Check that the schedule rule is "
            "enabled and why the last runs failed (run-failed alarm, ingest logs).",
            metric=(NAMESPACE, "RunSucceeded", pipeline, "Sum"),
            period=stale_period,
            periods=stale_periods,
            threshold=1,
            comparison="LessThanThreshold",
            missing="breaching",
        ),
        _alarm(
            r,
            "run-failed",
            "The last run lost data, failed or did not reconcile. Read the run's errors "
            "(manifest, ingest logs), fix the cause, then let the next run (or a manual one) "
            "catch up.",
            metric=(NAMESPACE, "RunFailed", pipeline, "Sum"),
            period=3600,
            missing="ignore",
        ),
        _alarm(
            r,
            "reconciliation-mismatch",
            "A run's counts do not add up: fetched != stored + quarantined for an entity. "
            "Compare the run manifest with the stores and look for failed batches.",
            metric=(NAMESPACE, "ReconciliationDifference", pipeline, "Maximum"),
            period=3600,
            missing="ignore",
        ),
        _alarm(
            r,
            "quality-gate",
            "A run failed its quality gate: a resource's quarantined share of the fetched "
            "records was above PIPELINE_MAX_QUARANTINE_RATIO (the source broke the contract "
            "for many records, e.g. a renamed field). Read the quarantine reasons and the "
            "run's schema drift, fix the contract or the source, redrive.",
            metric=(NAMESPACE, "QualityGateFailed", pipeline, "Sum"),
            period=3600,
            missing="ignore",
        ),
        _alarm(
            r,
            "quarantine-not-empty",
            f"Records wait in the quarantine bucket {r.quarantine_bucket}. Read their "
            "reasons, fix the data or the code, then redrive them.",
            metric=(NAMESPACE, "QuarantineBacklog", pipeline, "Maximum"),
            period=3600,
            missing="ignore",
        ),
        _alarm(
            r,
            "putrecords-failures",
            f"Kinesis rejected records put on {r.stream} (throttling); they were retried. "
            "If it repeats, add shards or lower the ingest concurrency.",
            metric=(NAMESPACE, "PutRecordsFailedRecords", pipeline, "Sum"),
            period=300,
        ),
        _alarm(
            r,
            "iterator-age",
            f"The load function lags behind the stream {r.stream}: records wait more than "
            f"{limits.iterator_age_ms // 60000} min. Check load errors and throttles; records "
            "older than the stream retention are lost.",
            metric=(
                "AWS/Kinesis",
                "GetRecords.IteratorAgeMilliseconds",
                [{"Name": "StreamName", "Value": r.stream}],
                "Maximum",
            ),
            period=300,
            threshold=limits.iterator_age_ms,
        ),
    ]
    for function, name in r.functions.items():
        dimension = [{"Name": "FunctionName", "Value": name}]
        slug = function.replace("_", "-")  # runbook anchors and alarm names use hyphens
        alarms.append(
            _alarm(
                r,
                f"{slug}-errors",
                f"The {function} function {name} failed (an invocation raised). Read its "
                "log group for the error.",
                metric=("AWS/Lambda", "Errors", dimension, "Sum"),
                period=3600 if function == "ingest" else 300,
            )
        )
        alarms.append(
            _alarm(
                r,
                f"{slug}-throttles",
                f"Lambda throttled the {function} function {name}: the account or function "
                "concurrency limit was reached.",
                metric=("AWS/Lambda", "Throttles", dimension, "Sum"),
                period=3600 if function == "ingest" else 300,
            )
        )
    alarms.append(
        _alarm(
            r,
            "dynamodb-throttles",
            "DynamoDB throttled reads or writes of the pipeline's tables; the SDK retried "
            "them. If it repeats, look at hot keys or switch the table's capacity mode.",
            metrics=_dynamodb_throttles(r),
            period=300,
        )
    )
    alarms.append(
        _alarm(
            r,
            "load-failures-queue",
            f"Batches the load function gave up on wait in the SQS queue {r.failure_queue}. "
            "Find why they failed, fix it, then redrive them.",
            metric=(
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                [{"Name": "QueueName", "Value": r.failure_queue}],
                "Maximum",
            ),
            period=300,
        )
    )
    alarms.append(
        _alarm(
            r,
            "ingest-work-dlq",
            f"Fan-out work items (page ranges) failed {WORK_ITEM_ATTEMPTS} times and wait in "
            f"the dead-letter queue {r.work_dead_letter_queue}: their pages were not "
            "published, so the run cannot reconcile. Read the ingest_worker logs, fix the "
            "cause, then redrive them to the work queue.",
            metric=(
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                [{"Name": "QueueName", "Value": r.work_dead_letter_queue}],
                "Maximum",
            ),
            period=300,
        )
    )
    for alarm in alarms:
        alarm["AlarmActions"] = [topic_arn]
        alarm["OKActions"] = [topic_arn]
    return alarms


def _alarm(
    resources: StageResources,
    slug: str,
    what: str,
    *,
    metric: tuple[str, str, list[dict[str, str]], str] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    period: int,
    periods: int = 1,
    threshold: float = 0,
    comparison: str = GREATER,
    missing: str = "notBreaching",
) -> dict[str, Any]:
    description = f"{what} Runbook: {RUNBOOK}#{slug}"
    if len(description) > 1024:
        raise ValueError(f"description of {slug} is longer than CloudWatch allows")
    alarm: dict[str, Any] = {
        "AlarmName": resources.alarm_name(slug),
        "AlarmDescription": description,
        "ActionsEnabled": True,
        "EvaluationPeriods": periods,
        "DatapointsToAlarm": periods,
        "Threshold": float(threshold),
        "ComparisonOperator": comparison,
        "TreatMissingData": missing,
    }
    if metric is not None:
        namespace, name, dimensions, statistic = metric
        alarm.update(
            Namespace=namespace,
            MetricName=name,
            Dimensions=dimensions,
            Statistic=statistic,
            Period=period,
        )
    else:
        assert metrics is not None
        for query in metrics:
            if "MetricStat" in query:
                query["MetricStat"]["Period"] = period
        alarm["Metrics"] = metrics
    return alarm


def _dynamodb_throttles(resources: StageResources) -> list[dict[str, Any]]:
    """Read and write throttle events of every table, summed (metric math, at most 10)."""
    queries: list[dict[str, Any]] = []
    for number, table in enumerate(resources.tables):
        for kind in ("Read", "Write"):
            queries.append(
                {
                    "Id": f"{kind.lower()}{number}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/DynamoDB",
                            "MetricName": f"{kind}ThrottleEvents",
                            "Dimensions": [{"Name": "TableName", "Value": table}],
                        },
                        "Period": 300,
                        "Stat": "Sum",
                    },
                    "ReturnData": False,
                }
            )
    if len(queries) > 10:
        raise ValueError("metric math alarms take at most 10 metrics")
    queries.append(
        {
            "Id": "throttles",
            "Expression": "SUM(METRICS())",
            "Label": "throttled requests",
            "ReturnData": True,
        }
    )
    return queries


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:g} h"


def referenced_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(namespace, metric, dimension names) of every metric an alarm reads."""
    if "MetricName" in alarm:
        names = tuple(sorted(d["Name"] for d in alarm.get("Dimensions", [])))
        return [(alarm["Namespace"], alarm["MetricName"], names)]
    found = []
    for query in alarm.get("Metrics", []):
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            names = tuple(sorted(d["Name"] for d in metric.get("Dimensions", [])))
            found.append((metric["Namespace"], metric["MetricName"], names))
    return found


def is_emitted(namespace: str, name: str, dimensions: tuple[str, ...]) -> bool:
    """True if the pipeline (custom namespace) or AWS (service namespaces) publishes it."""
    if namespace == NAMESPACE:
        spec = CATALOGUE.get(name)
        return spec is not None and any(
            tuple(sorted(s)) == tuple(sorted(dimensions)) for s in spec.dimension_sets
        )
    return name in AWS_SERVICE_METRICS.get(namespace, frozenset())
