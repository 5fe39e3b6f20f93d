"""The local health report: what the CloudWatch dashboard would show, as an HTML page.

Nobody can open a CloudWatch dashboard on moto, so this page is how one looks at the pipeline
locally. It is drawn from the emulated AWS APIs only: the dashboard definition (`GetDashboard`)
decides the charts, each metric line is read with `GetMetricData`, the alarm states with
`DescribeAlarms`, the runs from the run manifest table. Percentile lines are the exception:
moto cannot compute percentiles, so those come from the EMF lines the handlers wrote (the
local log group, `emf.jsonl`), as CloudWatch Logs Insights would compute them in AWS.

The data is collected while the local cloud runs (`collect`), kept as `health.json`, and drawn
by `localcloud/monitoring/health_page.py` (`render`): `DIR/index.html` and one PNG per chart in
`DIR/charts/`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.aws import clients as aws
from chalicelib.runs.outcome import LAST_SUCCESS_RUN_ID
from infra.dashboard import metric_lines
from localcloud.monitoring.emf_extraction import dimension_list, read_emf_archive

if TYPE_CHECKING:
    from localcloud.stack import LocalCloud

POINTS = 30
"""Periods per time-series chart: the period is the report's window divided by this."""


@dataclass
class Line:
    label: str
    stat: str
    timestamps: list[str]
    values: list[float]
    total: float | None
    """The statistic over the whole window (sum, extreme, or percentile of every value)."""
    runs: list[float | None] = field(default_factory=list)
    """The statistic over each run (`HealthData.runs`, same order); None: no data in that run."""


@dataclass
class Chart:
    title: str
    lines: list[Line]
    thresholds: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class AlarmState:
    name: str
    state: str
    reason: str
    description: str
    updated: str


@dataclass
class RunSummary:
    run_id: str
    started_at: str
    ingest_status: str
    outcome: str
    counts: dict[str, int]


@dataclass
class HealthData:
    pipeline: str
    stage: str
    dashboard: str
    generated_at: str
    window_start: str
    window_end: str
    period_s: int
    intro: str
    charts: list[Chart]
    alarms: list[AlarmState]
    runs: list[RunSummary]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# -- collecting, from the emulated APIs ---------------------------------------------------------


def collect(cloud: LocalCloud) -> HealthData:
    """Read everything the report shows from the local cloud's AWS APIs."""
    monitoring = cloud.monitoring
    resources = monitoring.resources
    assert resources is not None
    monitoring.publish()
    cloudwatch = aws.client("cloudwatch")
    body = json.loads(cloudwatch.get_dashboard(DashboardName=resources.dashboard)["DashboardBody"])
    start = monitoring.started_at.replace(microsecond=0)
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    period = max(1, math.ceil((end - start).total_seconds() / POINTS))
    archive = read_emf_archive(monitoring.emf_archive)

    intro = ""
    charts: list[Chart] = []
    alarm_names: list[str] = []
    metric_widgets: list[dict[str, Any]] = []
    for widget in body["widgets"]:
        properties = widget["properties"]
        if widget["type"] == "text":
            intro = properties["markdown"]
        elif widget["type"] == "alarm":
            alarm_names = [arn.rsplit(":", 1)[-1] for arn in properties["alarms"]]
        elif widget["type"] == "metric":
            charts.append(_metric_chart(cloudwatch, widget, archive, start, end, period))
            metric_widgets.append(widget)
    runs = _runs(cloud)
    _fill_run_values(cloudwatch, metric_widgets, charts, archive, runs, end)
    return HealthData(
        pipeline=resources.prefix,
        stage=resources.stage,
        dashboard=resources.dashboard,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        window_start=start.isoformat(),
        window_end=end.isoformat(),
        period_s=period,
        intro=intro,
        charts=charts,
        alarms=_alarms(cloudwatch, alarm_names),
        runs=runs,
    )


def _metric_chart(
    cloudwatch: Any,
    widget: dict[str, Any],
    archive: dict[Any, list[tuple[datetime, float]]],
    start: datetime,
    end: datetime,
    period: int,
) -> Chart:
    properties = widget["properties"]
    lines: list[Line] = []
    queries: list[dict[str, Any]] = []
    by_id: dict[str, Line] = {}
    specs = metric_lines({"widgets": [widget]})
    for index, (namespace, metric, dimensions, options) in enumerate(specs):
        stat = options.get("stat", properties.get("stat", "Average"))
        label = options.get("label", metric)
        if stat.startswith("p"):
            key = (namespace, metric, tuple(sorted(dimensions.items())))
            lines.append(_percentile_line(label, stat, archive.get(key, []), start, period))
            continue
        line = Line(label, stat, [], [], None)
        lines.append(line)
        by_id[f"l{index}"] = line
        queries.append(
            {
                "Id": f"l{index}",
                "Label": label,
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric,
                        "Dimensions": dimension_list(dimensions),
                    },
                    "Period": period,
                    "Stat": stat,
                },
            }
        )
    for first in range(0, len(queries), 500):
        response = cloudwatch.get_metric_data(
            MetricDataQueries=queries[first : first + 500], StartTime=start, EndTime=end
        )
        for result in response["MetricDataResults"]:
            line = by_id[result["Id"]]
            pairs = sorted(zip(result["Timestamps"], result["Values"], strict=True))
            line.timestamps = [moment.astimezone(UTC).isoformat() for moment, _ in pairs]
            line.values = [float(value) for _, value in pairs]
            line.total = _combine(line.stat, line.values)
    thresholds = [
        (str(item.get("label", "")), float(item["value"]))
        for item in properties.get("annotations", {}).get("horizontal", [])
    ]
    return Chart(properties["title"], lines, thresholds)


def run_bounds(runs: list[RunSummary], end: datetime) -> list[tuple[datetime, datetime] | None]:
    """Each run's interval: from its start (to the second) to the next run's start, or `end`.

    The local cloud starts each run in a second no earlier run wrote metrics in
    (`LocalMonitoring.begin_run`), so every datapoint falls in exactly one interval.
    """
    starts = [
        _parse(run.started_at).replace(microsecond=0) if run.started_at else None for run in runs
    ]
    bounds: list[tuple[datetime, datetime] | None] = []
    for index, begin in enumerate(starts):
        later = [moment for moment in starts[index + 1 :] if moment is not None]
        stop = later[0] if later else end
        bounds.append((begin, stop) if begin is not None and stop > begin else None)
    return bounds


def _fill_run_values(
    cloudwatch: Any,
    widgets: list[dict[str, Any]],
    charts: list[Chart],
    archive: dict[Any, list[tuple[datetime, float]]],
    runs: list[RunSummary],
    end: datetime,
) -> None:
    """Set `Line.runs`: each line's statistic over each run, one `GetMetricData` bucket per run."""
    specs = [
        (line, spec)
        for widget, chart in zip(widgets, charts, strict=True)
        for line, spec in zip(chart.lines, metric_lines({"widgets": [widget]}), strict=True)
    ]
    for line, _ in specs:
        line.runs = [None] * len(runs)
    for index, bounds in enumerate(run_bounds(runs, end)):
        if bounds is None:
            continue
        begin, stop = bounds
        queries: list[dict[str, Any]] = []
        by_id: dict[str, Line] = {}
        for number, (line, (namespace, metric, dimensions, _options)) in enumerate(specs):
            if line.stat.startswith("p"):
                key = (namespace, metric, tuple(sorted(dimensions.items())))
                values = [value for moment, value in archive.get(key, []) if begin <= moment < stop]
                if values:
                    line.runs[index] = percentile(values, float(line.stat[1:]) / 100.0)
                continue
            by_id[f"r{number}"] = line
            queries.append(
                {
                    "Id": f"r{number}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": metric,
                            "Dimensions": dimension_list(dimensions),
                        },
                        "Period": max(1, math.ceil((stop - begin).total_seconds())),
                        "Stat": line.stat,
                    },
                }
            )
        for first in range(0, len(queries), 500):
            response = cloudwatch.get_metric_data(
                MetricDataQueries=queries[first : first + 500], StartTime=begin, EndTime=stop
            )
            for result in response["MetricDataResults"]:
                line = by_id[result["Id"]]
                line.runs[index] = _combine(line.stat, [float(v) for v in result["Values"]])


def _percentile_line(
    label: str, stat: str, values: list[tuple[datetime, float]], start: datetime, period: int
) -> Line:
    buckets: dict[int, list[float]] = {}
    for moment, value in values:
        buckets.setdefault(int((moment - start).total_seconds() // period), []).append(value)
    quantile = float(stat[1:]) / 100.0
    ordered = sorted(buckets)
    return Line(
        label=label,
        stat=stat,
        timestamps=[(start + timedelta(seconds=i * period)).isoformat() for i in ordered],
        values=[percentile(buckets[i], quantile) for i in ordered],
        total=percentile([value for _, value in values], quantile) if values else None,
    )


def percentile(values: Sequence[float], quantile: float) -> float:
    """Nearest-rank percentile, as CloudWatch computes it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[rank - 1]


def _combine(stat: str, values: list[float]) -> float | None:
    if not values:
        return None
    if stat == "Maximum":
        return max(values)
    if stat == "Minimum":
        return min(values)
    if stat in ("Sum", "SampleCount"):
        return sum(values)
    return sum(values) / len(values)


def _alarms(cloudwatch: Any, names: list[str]) -> list[AlarmState]:
    found: list[AlarmState] = []
    for first in range(0, len(names), 100):
        response = cloudwatch.describe_alarms(AlarmNames=names[first : first + 100])
        for alarm in response["MetricAlarms"]:
            found.append(
                AlarmState(
                    name=alarm["AlarmName"],
                    state=alarm["StateValue"],
                    reason=alarm.get("StateReason", ""),
                    description=alarm.get("AlarmDescription", ""),
                    updated=alarm["StateUpdatedTimestamp"].astimezone(UTC).isoformat(),
                )
            )
    order = {name: index for index, name in enumerate(names)}
    return sorted(found, key=lambda alarm: order.get(alarm.name, len(order)))


def _runs(cloud: LocalCloud) -> list[RunSummary]:
    """Every run manifest, oldest first, with its outcome: the verdict the reconcile function
    wrote in it (`reconciling` or `unknown` while it has none)."""
    settings = cloud.settings
    dynamodb = aws.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=settings.table_name("runs")):
        items.extend(item for item in page["Items"] if item["run_id"]["S"] != LAST_SUCCESS_RUN_ID)
    runs: list[RunSummary] = []
    for item in sorted(items, key=lambda i: i.get("started_at", {}).get("S", "")):
        counts: dict[str, int] = {}
        for name, value in item.items():
            if "N" in value:
                step = name.split(".", 1)[0]
                counts[step] = counts.get(step, 0) + int(value["N"])
        runs.append(
            RunSummary(
                run_id=item["run_id"]["S"],
                started_at=item.get("started_at", {}).get("S", ""),
                ingest_status=item.get("ingest_status", {}).get("S", "unknown"),
                outcome=item.get("status", {}).get("S", "unknown"),
                counts=counts,
            )
        )
    return runs


def _parse(moment: str) -> datetime:
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- drawing -------------------------------------------------------------------------------------


def render(data: HealthData, out_dir: Path) -> Path:
    """Write `out_dir/index.html`, `out_dir/charts/*.png` and `out_dir/health.json`."""
    from localcloud.monitoring.health_page import render as render_page

    return render_page(data, out_dir)


def write_report(cloud: LocalCloud, out_dir: Path) -> Path:
    """Collect from the running local cloud and render; returns the path of index.html."""
    return render(collect(cloud), out_dir)
