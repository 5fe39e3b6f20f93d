"""The local health report: what the CloudWatch dashboard would show, as an HTML page.

Nobody can open a CloudWatch dashboard on moto, so this page is how one looks at the pipeline
locally. It is drawn from the emulated AWS APIs only: the dashboard definition (`GetDashboard`)
decides the charts, each metric line is read with `GetMetricData`, the alarm states with
`DescribeAlarms`, the runs from the run manifest table. Percentile lines are the exception:
moto cannot compute percentiles, so those come from the EMF lines the handlers wrote (the
local log group, `emf.jsonl`), as CloudWatch Logs Insights would compute them in AWS.

The data is collected while the local cloud runs (`collect`), kept as `health.json`, and drawn
with matplotlib (`render`): `DIR/index.html` and one PNG per chart in `DIR/charts/`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib import aws
from chalicelib.outcome import LAST_SUCCESS_RUN_ID
from infra.dashboard import metric_lines
from localcloud.metrics_bridge import dimension_list, read_emf_archive

if TYPE_CHECKING:
    from localcloud.stack import LocalCloud

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = PROJECT_ROOT / "docs" / "operations.md"
POINTS = 30
"""Periods per time-series chart: the period is the report's window divided by this."""
STATE_COLOURS = {"OK": "#2e7d32", "ALARM": "#c62828", "INSUFFICIENT_DATA": "#9e9e9e"}


@dataclass
class Line:
    label: str
    stat: str
    timestamps: list[str]
    values: list[float]
    total: float | None
    """The statistic over the whole window (sum, extreme, or percentile of every value)."""


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
    for widget in body["widgets"]:
        properties = widget["properties"]
        if widget["type"] == "text":
            intro = properties["markdown"]
        elif widget["type"] == "alarm":
            alarm_names = [arn.rsplit(":", 1)[-1] for arn in properties["alarms"]]
        elif widget["type"] == "metric":
            charts.append(_metric_chart(cloudwatch, widget, archive, start, end, period))
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
        runs=_runs(cloud, resources.prefix, cloudwatch, start, end),
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


def _runs(
    cloud: LocalCloud, pipeline: str, cloudwatch: Any, start: datetime, end: datetime
) -> list[RunSummary]:
    """Every run manifest, oldest first, with its outcome from the RunSucceeded/Failed metrics."""
    settings = cloud.settings
    dynamodb = aws.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=settings.table_name("runs")):
        items.extend(item for item in page["Items"] if item["run_id"]["S"] != LAST_SUCCESS_RUN_ID)
    outcomes = _outcomes(cloudwatch, pipeline, start, end)
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
                outcome="unknown",
                counts=counts,
            )
        )
    for moment, outcome in outcomes:  # `moment` is the start of a one-second bucket
        started = [
            run
            for run in runs
            if run.started_at and _parse(run.started_at).replace(microsecond=0) <= moment
        ]
        if started:
            started[-1].outcome = outcome
    return runs


def _outcomes(
    cloudwatch: Any, pipeline: str, start: datetime, end: datetime
) -> list[tuple[datetime, str]]:
    """(time, "succeeded" | "failed") of each run outcome recorded in the window."""
    queries = [
        {
            "Id": metric.lower(),
            "MetricStat": {
                "Metric": {
                    "Namespace": "MooVitamix/Pipeline",
                    "MetricName": metric,
                    "Dimensions": dimension_list({"Pipeline": pipeline}),
                },
                "Period": 1,
                "Stat": "Sum",
            },
        }
        for metric in ("RunSucceeded", "RunFailed")
    ]
    response = cloudwatch.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
    outcomes = []
    for result in response["MetricDataResults"]:
        label = "succeeded" if result["Id"] == "runsucceeded" else "failed"
        for moment, value in zip(result["Timestamps"], result["Values"], strict=True):
            if value > 0:
                outcomes.append((moment.astimezone(UTC), label))
    return sorted(outcomes)


def _parse(moment: str) -> datetime:
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- drawing -------------------------------------------------------------------------------------


def render(data: HealthData, out_dir: Path) -> Path:
    """Write `out_dir/index.html`, `out_dir/charts/*.png` and `out_dir/health.json`."""
    import matplotlib

    matplotlib.use("Agg")
    charts_dir = out_dir / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    for stale in charts_dir.glob("*.png"):
        stale.unlink()
    (out_dir / "health.json").write_text(data.to_json(), encoding="utf-8")

    figures: list[tuple[str, str, str]] = []  # (title, file, caption html)
    figures.append(("Runs over time (run manifests)", _draw_runs(data.runs, charts_dir), ""))
    figures.append(("Alarm states", _draw_alarms(data.alarms, charts_dir), ""))
    for number, chart in enumerate(data.charts):
        file_name = _draw_chart(chart, data, charts_dir / f"chart-{number:02d}.png")
        figures.append((chart.title, file_name, _totals_table(chart)))
    page = _page(data, figures)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _figure(width: float = 7.0, height: float = 3.4) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    return figure, axes


def _save(figure: Any, path: Path, tight: bool = True) -> str:
    import matplotlib.pyplot as plt

    if tight:
        figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return f"charts/{path.name}"


def _draw_chart(chart: Chart, data: HealthData, path: Path) -> str:
    """Left: the lines over the window (as the dashboard shows them); right: window totals."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    # Fixed axes positions: automatic layout (tight/constrained) costs more than the drawing.
    figure = plt.figure(figsize=(10.0, 3.6), dpi=100)
    series = figure.add_axes((0.05, 0.16, 0.47, 0.68))
    totals = figure.add_axes((0.78, 0.16, 0.20, 0.68))
    drawn = 0
    highest = 0.0
    for line in chart.lines:
        if not line.values:
            continue
        moments = mdates.date2num([datetime.fromisoformat(m) for m in line.timestamps])
        series.plot(moments, line.values, marker="o", markersize=3, linewidth=1.2, label=line.label)
        highest = max(highest, max(line.values))
        drawn += 1
    for label, value in chart.thresholds:
        if drawn and value <= max(highest, 1.0) * 3:
            series.axhline(value, color="#c62828", linestyle="--", linewidth=1, label=label)
    if not drawn:
        series.text(
            0.5,
            0.5,
            "no data in this window",
            ha="center",
            va="center",
            transform=series.transAxes,
            color="#777",
        )
    series.set_xlim(
        mdates.date2num(datetime.fromisoformat(data.window_start)),
        mdates.date2num(datetime.fromisoformat(data.window_end)),
    )
    locator = mdates.AutoDateLocator()
    series.xaxis.set_major_locator(locator)
    series.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    series.tick_params(labelsize=7)
    series.grid(alpha=0.3)
    if drawn:
        series.set_ylim(bottom=0)
        series.legend(fontsize=6, ncol=2 if drawn > 6 else 1, loc="upper left", framealpha=0.8)

    labels = [f"{line.label} ({line.stat})" for line in chart.lines]
    values = [line.total or 0.0 for line in chart.lines]
    totals.barh(range(len(labels)), values, color="#1565c0")
    totals.set_yticks(range(len(labels)))
    totals.set_yticklabels(labels, fontsize=6)
    totals.invert_yaxis()
    totals.set_xlim(0, max([*values, 0.0]) * 1.1 or 1.0)
    totals.tick_params(axis="x", labelsize=7)
    totals.set_title("over the window", fontsize=8)
    totals.grid(alpha=0.3, axis="x")
    figure.suptitle(chart.title, fontsize=10)
    return _save(figure, path, tight=False)


def _draw_runs(runs: list[RunSummary], charts_dir: Path) -> str:
    figure, axes = _figure()
    steps = ("fetched", "published", "written", "quarantined")
    if runs:
        width = 0.8 / len(steps)
        for offset, step in enumerate(steps):
            axes.bar(
                [index + offset * width for index in range(len(runs))],
                [run.counts.get(step, 0) for run in runs],
                width=width,
                label=step,
            )
        axes.set_xticks([index + 0.4 - width / 2 for index in range(len(runs))])
        axes.set_xticklabels(
            [f"{run.started_at[11:19]}\n{run.outcome}" for run in runs], fontsize=7
        )
        for tick, run in zip(axes.get_xticklabels(), runs, strict=True):
            tick.set_color(
                STATE_COLOURS["OK"] if run.outcome == "succeeded" else STATE_COLOURS["ALARM"]
            )
        axes.legend(fontsize=7)
    else:
        axes.text(0.5, 0.5, "no runs", ha="center", va="center", transform=axes.transAxes)
    axes.set_title("Runs: records per step (all entities)", fontsize=10)
    axes.grid(alpha=0.3, axis="y")
    return _save(figure, charts_dir / "runs.png")


def _draw_alarms(alarms: list[AlarmState], charts_dir: Path) -> str:
    figure, axes = _figure(height=max(2.0, 0.3 * len(alarms) + 0.8))
    names = [alarm.name for alarm in alarms]
    axes.barh(
        range(len(alarms)),
        [1] * len(alarms),
        color=[STATE_COLOURS.get(alarm.state, "#9e9e9e") for alarm in alarms],
    )
    for index, alarm in enumerate(alarms):
        axes.text(0.02, index, alarm.state, va="center", color="white", fontsize=8, weight="bold")
    axes.set_yticks(range(len(alarms)))
    axes.set_yticklabels(names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xticks([])
    axes.set_xlim(0, 1)
    axes.set_title("Alarm states", fontsize=10)
    return _save(figure, charts_dir / "alarms.png")


def _totals_table(chart: Chart) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(line.label)}</td><td>{html.escape(line.stat)}</td>"
        f"<td class=num>{'-' if line.total is None else f'{line.total:,.3g}'}</td></tr>"
        for line in chart.lines
    )
    return f"<table class=totals><tr><th>line</th><th>stat</th><th>window</th></tr>{rows}</table>"


def _page(data: HealthData, figures: list[tuple[str, str, str]]) -> str:
    alarming = [alarm for alarm in data.alarms if alarm.state == "ALARM"]
    last = data.runs[-1] if data.runs else None
    verdict = (
        "healthy" if last and last.outcome == "succeeded" and not alarming else "needs attention"
    )
    runbook = RUNBOOK.as_uri()
    alarm_rows = "".join(
        f"<tr class={alarm.state.lower()}><td>{html.escape(alarm.name)}</td>"
        f"<td>{alarm.state}</td><td>{_linked(alarm.description, runbook)}</td>"
        f"<td>{html.escape(alarm.reason)}</td></tr>"
        for alarm in data.alarms
    )
    run_rows = "".join(
        f"<tr><td>{html.escape(run.run_id)}</td><td>{html.escape(run.started_at)}</td>"
        f"<td>{html.escape(run.ingest_status)}</td><td>{html.escape(run.outcome)}</td>"
        + "".join(
            f"<td class=num>{run.counts.get(step, 0)}</td>"
            for step in ("fetched", "published", "written", "quarantined", "pages")
        )
        + "</tr>"
        for run in data.runs
    )
    cards = "".join(
        f"<figure><img src='{html.escape(file)}' alt='{html.escape(title)}'>"
        f"<figcaption>{html.escape(title)}{caption}</figcaption></figure>"
        for title, file, caption in figures
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(data.pipeline)} pipeline health</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(640px, 1fr)); gap: 1em; }}
figure {{ margin: 0; border: 1px solid #ddd; padding: .5em; }}
img {{ max-width: 100%; }}
table {{ border-collapse: collapse; font-size: .85em; margin: .5em 0; }}
td, th {{ border: 1px solid #ddd; padding: .2em .5em; text-align: left; vertical-align: top; }}
.num {{ text-align: right; }}
tr.alarm td:nth-child(2) {{ color: #c62828; font-weight: bold; }}
tr.ok td:nth-child(2) {{ color: #2e7d32; }}
.bad {{ color: #c62828; font-weight: bold; }}
</style></head><body>
<h1>{html.escape(data.pipeline)} pipeline: {verdict}</h1>
<p>Stage <code>{html.escape(data.stage)}</code>, dashboard
<code>{html.escape(data.dashboard)}</code>. Window {html.escape(data.window_start)} to
{html.escape(data.window_end)}, {data.period_s} s per point. Generated
{html.escape(data.generated_at)} from the local cloud's CloudWatch, DynamoDB and EMF log.
{len(alarming)} alarm(s) in ALARM. <span id="image-status">checking charts...</span></p>
<pre>{html.escape(data.intro)}</pre>
<h2>Alarms</h2>
<table><tr><th>alarm</th><th>state</th><th>what to do</th><th>why (local evaluator)</th></tr>
{alarm_rows}</table>
<h2>Runs</h2>
<table><tr><th>run</th><th>started</th><th>ingest</th><th>outcome</th><th>fetched</th>
<th>published</th><th>written</th><th>quarantined</th><th>pages</th></tr>{run_rows}</table>
<h2>Dashboard</h2>
<div class="grid">{cards}</div>
<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) {{ return img.complete && img.naturalWidth > 0; }});
  images.forEach(function (img) {{
    img.setAttribute("data-loaded", String(img.complete && img.naturalWidth > 0));
  }});
  var status = document.getElementById("image-status");
  status.setAttribute("data-images", String(images.length));
  status.setAttribute("data-loaded", String(loaded.length));
  status.textContent = loaded.length === images.length
    ? "all " + images.length + " charts loaded"
    : (images.length - loaded.length) + " chart(s) failed to load";
  if (loaded.length !== images.length) {{ status.className = "bad"; }}
}});
</script>
</body></html>
"""


def _linked(description: str, runbook: str) -> str:
    """The description with its `docs/operations.md#anchor` turned into a link."""
    text = html.escape(description)
    marker = "docs/operations.md#"
    if marker not in description:
        return text
    anchor = description.split(marker, 1)[1].split()[0].rstrip(".")
    return text.replace(
        html.escape(marker + anchor),
        f"<a href='{runbook}#{html.escape(anchor)}'>{marker}{anchor}</a>",
    )


def write_report(cloud: LocalCloud, out_dir: Path) -> Path:
    """Collect from the running local cloud and render; returns the path of index.html."""
    return render(collect(cloud), out_dir)
