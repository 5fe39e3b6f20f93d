"""Dashboard as code: the stage's CloudWatch dashboard body, built from its resources.

One place defines what a person looks at: runs and freshness, throughput per step and entity,
quarantine, errors, latency percentiles, stream lag, and the state of every alarm. The local
health report (`localcloud/monitoring/health_report.py`) draws the same widgets from the same
definition.
"""

from __future__ import annotations

from typing import Any, Final

from chalicelib.observability.catalogue import NAMESPACE, PIPELINE
from infra.alarms import AlarmThresholds
from infra.stage import StageResources

PERIOD: Final = 300
WIDTH: Final = 12
HEIGHT: Final = 6


def dashboard_name(resources: StageResources) -> str:
    return resources.dashboard


def dashboard_body(
    resources: StageResources,
    region: str,
    account_id: str,
    alarm_names: list[str],
    thresholds: AlarmThresholds | None = None,
) -> dict[str, Any]:
    """The `PutDashboard` body (before JSON encoding).

    `region` and `account_id` may be CloudFormation placeholders (`${AWS::Region}`) when the
    body is rendered into a template with `Fn::Sub`.
    """
    limits = thresholds or AlarmThresholds()
    r = resources
    pipe = {PIPELINE: r.prefix}
    widgets: list[dict[str, Any]] = [
        {
            "type": "text",
            "properties": {
                "markdown": (
                    f"# {r.prefix} pipeline\n"
                    f"Stage `{r.stage}`. Custom metrics: namespace `{NAMESPACE}`, "
                    f"dimension `{PIPELINE}={r.prefix}`. What each metric and alarm means and "
                    "what to do: `docs/operations.md`."
                )
            },
        },
        {
            "type": "alarm",
            "properties": {
                "title": "Alarm states",
                "alarms": [
                    f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{name}" for name in alarm_names
                ],
                "sortBy": "stateUpdatedTimestamp",
            },
        },
        _metric_widget(
            region,
            "Runs: succeeded and failed",
            [
                _line(NAMESPACE, "RunSucceeded", pipe, "Sum", "succeeded"),
                _line(NAMESPACE, "RunFailed", pipe, "Sum", "failed"),
            ],
            period=3600,
        ),
        _metric_widget(
            region,
            "Freshness: age of the last successful run (s)",
            [_line(NAMESPACE, "Freshness", pipe, "Maximum", "freshness")],
            period=3600,
            horizontal=[("stale", float(r.stale_after_s(limits.stale_margin_s)))],
        ),
        _metric_widget(
            region,
            "Fetched, published and skipped as unchanged per entity",
            [
                _line(NAMESPACE, metric, {**pipe, "Entity": entity}, "Sum", f"{entity} {step}")
                for entity in r.entities
                for metric, step in (
                    ("RecordsFetched", "fetched"),
                    ("RecordsPublished", "published"),
                    ("RecordsSkippedUnchanged", "unchanged"),
                )
            ],
        ),
        _metric_widget(
            region,
            "Written and unchanged per entity and sink",
            [
                _line(
                    NAMESPACE,
                    metric,
                    {**pipe, "Entity": entity, "Sink": sink},
                    "Sum",
                    f"{entity} {step} ({sink})",
                )
                for entity in r.entities
                for sink in r.sinks
                for metric, step in (
                    ("RecordsWritten", "written"),
                    ("RecordsUnchanged", "unchanged"),
                )
            ],
        ),
        _metric_widget(
            region,
            "Quarantine: records quarantined per step, backlog",
            [
                _line(
                    NAMESPACE,
                    "RecordsQuarantined",
                    {**pipe, "Entity": entity, "Step": step},
                    "Sum",
                    f"{entity} at {step}",
                )
                for entity in r.entities
                for step in ("ingest", "load")
            ]
            + [_line(NAMESPACE, "QuarantineBacklog", pipe, "Maximum", "backlog (objects)")],
        ),
        _metric_widget(
            region,
            "Errors: API, Kinesis, sinks, Lambda",
            [
                _line(NAMESPACE, metric, {**pipe, "Entity": entity}, "Sum", f"{label} {entity}")
                for metric, label in (("ApiRetries", "API retries"), ("ApiErrors", "API errors"))
                for entity in r.entities
            ]
            + [_line(NAMESPACE, "PutRecordsFailedRecords", pipe, "Sum", "PutRecords failed")]
            + [
                _line(
                    NAMESPACE,
                    "RecordsFailed",
                    {**pipe, "Entity": entity, "Sink": sink},
                    "Sum",
                    f"sink failures {entity} ({sink})",
                )
                for entity in r.entities
                for sink in r.sinks
            ]
            + [
                _line("AWS/Lambda", metric, {"FunctionName": name}, "Sum", f"{function} {metric}")
                for function, name in r.functions.items()
                for metric in ("Errors", "Throttles")
            ],
        ),
        _metric_widget(
            region,
            "End-to-end latency, fetch to stored (ms)",
            [
                _line(
                    NAMESPACE,
                    "EndToEndLatency",
                    {**pipe, "Entity": entity, "Sink": sink},
                    percentile,
                    f"{entity} {percentile} ({sink})",
                )
                for entity in r.entities
                for sink in r.sinks
                for percentile in ("p50", "p90", "p99")
            ],
        ),
        _metric_widget(
            region,
            "Durations: fetch per resource (s), load per batch p90 (ms)",
            [
                _line(
                    NAMESPACE,
                    "FetchDuration",
                    {**pipe, "Entity": entity},
                    "Maximum",
                    f"fetch {entity}",
                )
                for entity in r.entities
            ]
            + [
                _line(
                    NAMESPACE,
                    "LoadDuration",
                    {**pipe, "Entity": entity, "Sink": sink},
                    "p90",
                    f"load {entity} ({sink})",
                )
                for entity in r.entities
                for sink in r.sinks
            ],
        ),
        _metric_widget(
            region,
            "Stream iterator age (ms)",
            [
                _line(
                    "AWS/Kinesis",
                    "GetRecords.IteratorAgeMilliseconds",
                    {"StreamName": r.stream},
                    "Maximum",
                    "stream",
                ),
                _line(
                    "AWS/Lambda",
                    "IteratorAge",
                    {"FunctionName": r.functions["load"]},
                    "Maximum",
                    "load function",
                ),
            ],
            horizontal=[("alarm", float(limits.iterator_age_ms))],
        ),
        _metric_widget(
            region,
            "Fan-out worker: invocations, errors (count), duration (ms)",
            [
                _line(
                    "AWS/Lambda",
                    metric,
                    {"FunctionName": r.functions["ingest_worker"]},
                    stat,
                    f"ingest_worker {label}",
                )
                for metric, stat, label in (
                    ("Invocations", "Sum", "invocations"),
                    ("Errors", "Sum", "errors"),
                    ("Duration", "p90", "duration p90"),
                    ("Duration", "Maximum", "duration max"),
                )
            ],
        ),
        _metric_widget(
            region,
            "Work queue: items waiting, in progress, dead-lettered",
            [
                _line(
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    {"QueueName": r.work_queue},
                    "Maximum",
                    "work items waiting",
                ),
                _line(
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesNotVisible",
                    {"QueueName": r.work_queue},
                    "Maximum",
                    "work items in progress",
                ),
                _line(
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    {"QueueName": r.work_dead_letter_queue},
                    "Maximum",
                    "dead-lettered work items",
                ),
            ],
        ),
        _metric_widget(
            region,
            "Reconciliation difference and load-failure queue",
            [
                _line(
                    NAMESPACE,
                    "ReconciliationDifference",
                    {**pipe, "Entity": entity},
                    "Maximum",
                    f"difference {entity}",
                )
                for entity in r.entities
            ]
            + [
                _line(
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    {"QueueName": r.failure_queue},
                    "Maximum",
                    "failed batches queued",
                )
            ],
        ),
        _metric_widget(
            region,
            "DynamoDB throttled requests",
            [
                _line(
                    "AWS/DynamoDB",
                    f"{kind}ThrottleEvents",
                    {"TableName": table},
                    "Sum",
                    f"{table} {kind.lower()}",
                )
                for table in r.tables
                for kind in ("Read", "Write")
            ],
        ),
    ]
    return {"widgets": _layout(widgets)}


def _line(
    namespace: str, metric: str, dimensions: dict[str, str], stat: str, label: str
) -> list[Any]:
    line: list[Any] = [namespace, metric]
    for name, value in dimensions.items():
        line += [name, value]
    line.append({"stat": stat, "label": label})
    return line


def _metric_widget(
    region: str,
    title: str,
    lines: list[list[Any]],
    *,
    period: int = PERIOD,
    horizontal: list[tuple[str, float]] | None = None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "title": title,
        "view": "timeSeries",
        "stacked": False,
        "region": region,
        "period": period,
        "metrics": lines,
    }
    if horizontal:
        properties["annotations"] = {
            "horizontal": [{"label": label, "value": value} for label, value in horizontal]
        }
    return {"type": "metric", "properties": properties}


def _layout(widgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Full-width text on top, then two widgets per row."""
    placed = []
    x, y = 0, 0
    for widget in widgets:
        width = 24 if widget["type"] == "text" else WIDTH
        height = 2 if widget["type"] == "text" else HEIGHT
        if x + width > 24:
            x, y = 0, y + HEIGHT
        placed.append({**widget, "x": x, "y": y, "width": width, "height": height})
        x += width
        if x >= 24:
            x, y = 0, y + height
    return placed


def metric_lines(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """(namespace, metric, dimensions, options) of every line of every metric widget."""
    lines = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        for line in widget["properties"]["metrics"]:
            options = line[-1] if isinstance(line[-1], dict) else {}
            parts = line[:-1] if isinstance(line[-1], dict) else line
            namespace, metric, *pairs = parts
            dimensions = dict(zip(pairs[::2], pairs[1::2], strict=True))
            lines.append((namespace, metric, dimensions, options))
    return lines
