"""Drawing the health report: `HealthData` -> `index.html`, one PNG per chart, `health.json`.

What a person reads first is the page, so it is made to be read at a glance:

- the verdict, the alarms and the runs are HTML tables (never pictures of them);
- each metric widget of the dashboard is one chart. Over a single run, every line is one
  labelled horizontal bar (its value over the run): a run's few datapoints drawn as a time
  series would be isolated dots. Over several runs, it is a time series with a distinct
  colour (and, past 20 lines, dash) per line, a marker per datapoint, each run's start
  marked, and the legend outside the plot;
- a widget with no data at all is a sentence, not an empty chart; lines without data are
  named under their chart; exact values sit in a folded table under each chart;
- the dashboard's text widget is Markdown, rendered to HTML with markdown-it-py (raw HTML
  disabled), which `rich` already depends on.

Charts are drawn with matplotlib (Agg) in `health_charts.py`: nothing here draws by hand what
it can do.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localcloud.monitoring.health_report import AlarmState, Chart, HealthData

from localcloud.monitoring.health_charts import (
    MAX_BAR_RUNS,
    draw_bars,
    draw_series,
    number,
    run_values,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = PROJECT_ROOT / "docs" / "operations.md"
STATE_COLOURS = {"OK": "#2e7d32", "ALARM": "#c62828", "INSUFFICIENT_DATA": "#757575"}


@dataclass
class Figure:
    """One card of the dashboard grid: a chart (or a note when there is nothing to draw)."""

    title: str
    image: str | None
    note: str
    values: str


def render(data: HealthData, out_dir: Path) -> Path:
    """Write `out_dir/index.html`, `out_dir/charts/*.png` and `out_dir/health.json`."""
    import matplotlib

    matplotlib.use("Agg")
    charts_dir = out_dir / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    for stale in charts_dir.glob("*.png"):
        stale.unlink()
    (out_dir / "health.json").write_text(data.to_json(), encoding="utf-8")
    by_run = 1 <= len(data.runs) <= MAX_BAR_RUNS
    figures = []
    for position, chart in enumerate(data.charts):
        if by_run:
            drawn = [line for line in chart.lines if run_values(line, len(data.runs))]
        else:
            drawn = [line for line in chart.lines if line.values]
        empty = [line.label for line in chart.lines if line not in drawn]
        note = ""
        if empty and drawn:
            note = f"Not drawn, no data: {', '.join(empty[:4])}"
            note += f" and {len(empty) - 4} more (see values)." if len(empty) > 4 else "."
        image = None
        if drawn:
            path = charts_dir / f"chart-{position:02d}.png"
            if by_run:
                draw_bars(chart, drawn, data, path)
            else:
                draw_series(chart, drawn, data, path)
            image = f"charts/{path.name}"
        else:
            note = "No data in this window."
        figures.append(Figure(chart.title, image, note, _values_table(chart, data)))
    index = out_dir / "index.html"
    index.write_text(page(data, figures), encoding="utf-8")
    return index


# -- the page ---------------------------------------------------------------------------------


def markdown(text: str) -> str:
    """The dashboard's Markdown as HTML; raw HTML in it is escaped, never passed through."""
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": False}).render(text))


def _values_table(chart: Chart, data: HealthData) -> str:
    """Exact values, folded under the chart: per run (up to `MAX_BAR_RUNS`) and the window."""
    runs = len(data.runs) if 1 < len(data.runs) <= MAX_BAR_RUNS else 0

    def cell(value: float | None) -> str:
        return f"<td class=num>{'-' if value is None else number(value)}</td>"

    rows = "".join(
        f"<tr><td>{html.escape(line.label)}</td><td>{html.escape(line.stat)}</td>"
        + "".join(cell(value) for value in (line.runs if len(line.runs) == runs else []))
        + cell(line.total)
        + "</tr>"
        for line in chart.lines
    )
    rows += "".join(
        f"<tr><td>{html.escape(name or 'threshold')}</td><td>alarm threshold</td>"
        + "<td></td>" * runs
        + cell(value)
        + "</tr>"
        for name, value in chart.thresholds
    )
    headers = "".join(f"<th>run {index}</th>" for index in range(1, runs + 1))
    return (
        "<details><summary>values</summary><table class=values>"
        f"<tr><th>line</th><th>statistic</th>{headers}<th>window</th></tr>{rows}</table>"
        "</details>"
    )


def _card(figure: Figure) -> str:
    image = (
        f"<img src='{html.escape(figure.image)}' alt='{html.escape(figure.title)}'>"
        if figure.image
        else ""
    )
    note = f"<p class=note>{html.escape(figure.note)}</p>" if figure.note else ""
    kind = "card" if figure.image else "card empty"
    return (
        f"<figure class='{kind}'><figcaption>{html.escape(figure.title)}</figcaption>"
        f"{image}{note}{figure.values}</figure>"
    )


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


def _alarm_table(alarms: list[AlarmState], runbook: str) -> str:
    rows = "".join(
        f"<tr class={alarm.state.lower()}><td>{html.escape(alarm.name)}</td>"
        f"<td class=state>{alarm.state}</td><td>{_linked(alarm.description, runbook)}</td>"
        f"<td class=why>{html.escape(alarm.reason)}</td></tr>"
        for alarm in alarms
    )
    return (
        "<table><tr><th>alarm</th><th>state</th><th>what to do</th>"
        f"<th>why (local evaluator)</th></tr>{rows}</table>"
    )


def page(data: HealthData, figures: list[Figure]) -> str:
    """The whole page: verdict, dashboard text, alarms, runs, then the charts."""
    alarming = [alarm for alarm in data.alarms if alarm.state == "ALARM"]
    last = data.runs[-1] if data.runs else None
    healthy = bool(last and last.outcome == "succeeded" and not alarming)
    verdict = "healthy" if healthy else "needs attention"
    reasons = []
    if last is None:
        reasons.append("no run in this window")
    elif last.outcome != "succeeded":
        reasons.append(f"the last run {last.outcome}")
    if alarming:
        reasons.append(f"{len(alarming)} alarm(s) in ALARM")
    states = {state: sum(1 for a in data.alarms if a.state == state) for state in STATE_COLOURS}
    alarm_summary = (
        ", ".join(f"{count} {state}" for state, count in states.items() if count) or "none"
    )
    runbook = RUNBOOK.as_uri()
    attention = [alarm for alarm in data.alarms if alarm.state != "OK"]
    attention.sort(key=lambda alarm: alarm.state != "ALARM")
    quiet = [alarm for alarm in data.alarms if alarm.state == "OK"]
    alarms_html = _alarm_table(attention, runbook) if attention else ""
    if quiet:
        chips = "".join(
            f"<span class=chip title='{html.escape(alarm.name)}'>"
            f"{html.escape(alarm.name.removeprefix(data.pipeline + '-'))}</span>"
            for alarm in quiet
        )
        alarms_html += (
            f"<p class=chips><span class=label>{len(quiet)} OK:</span> {chips}</p>"
            "<details><summary>what each OK alarm watches, and why it is OK</summary>"
            f"{_alarm_table(quiet, runbook)}</details>"
        )
    steps = ("fetched", "published", "written", "quarantined", "pages")
    run_rows = "".join(
        f"<tr><td>{index}</td><td><code>{html.escape(run.run_id)}</code></td>"
        f"<td>{html.escape(run.started_at[:19].replace('T', ' '))}</td>"
        f"<td>{html.escape(run.ingest_status)}</td>"
        f"<td class='outcome {html.escape(run.outcome)}'>{html.escape(run.outcome)}</td>"
        + "".join(f"<td class=num>{run.counts.get(step, 0):,}</td>" for step in steps)
        + "</tr>"
        for index, run in enumerate(data.runs, start=1)
    )
    step_headers = "".join(f"<th>{step}</th>" for step in steps)
    if len(data.runs) == 1:
        scope = "One run: each bar is a line's value over the run"
    elif 1 < len(data.runs) <= MAX_BAR_RUNS:
        scope = f"{len(data.runs)} runs: each bar is a line's value over one run"
    else:
        scope = f"{len(data.runs)} runs: each line over the window, {data.period_s} s per point"
    cards = "".join(_card(figure) for figure in figures)
    badge = "ok" if healthy else "bad"
    because = f" ({'; '.join(reasons)})" if reasons else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(data.pipeline)} pipeline: {verdict}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 1.5em;
  color: #212121; background: #fafafa; }}
h1 {{ margin: 0 0 .2em; font-size: 1.6em; }}
h2 {{ margin: 1.2em 0 .4em; font-size: 1.2em; }}
.badge {{ display: inline-block; padding: .05em .5em; border-radius: .3em; color: #fff; }}
.badge.ok {{ background: {STATE_COLOURS["OK"]}; }}
.badge.bad {{ background: {STATE_COLOURS["ALARM"]}; }}
.meta {{ color: #555; font-size: .9em; margin: .2em 0; }}
.intro {{ background: #fff; border: 1px solid #ddd; border-left: 4px solid #1565c0;
  padding: .2em 1em; margin: .8em 0; }}
.intro h1 {{ font-size: 1.1em; margin: .5em 0 .2em; }}
.intro p {{ margin: .3em 0 .6em; }}
table {{ border-collapse: collapse; font-size: .85em; background: #fff; }}
td, th {{ border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.state {{ font-weight: bold; }}
tr.ok td.state {{ color: {STATE_COLOURS["OK"]}; }}
tr.alarm td.state {{ color: {STATE_COLOURS["ALARM"]}; }}
tr.alarm {{ background: #ffebee; }}
tr.insufficient_data td.state {{ color: {STATE_COLOURS["INSUFFICIENT_DATA"]}; }}
td.why {{ color: #616161; font-size: .9em; }}
td.outcome.succeeded {{ color: {STATE_COLOURS["OK"]}; font-weight: bold; }}
td.outcome.failed {{ color: {STATE_COLOURS["ALARM"]}; font-weight: bold; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr));
  gap: 1em; align-items: start; }}
figure.card {{ margin: 0; background: #fff; border: 1px solid #ddd; padding: .6em; }}
figure.card.empty {{ color: #757575; }}
figcaption {{ font-weight: 600; margin-bottom: .3em; }}
figure img {{ max-width: 100%; height: auto; display: block; }}
.note {{ color: #757575; font-size: .85em; margin: .3em 0; }}
details {{ font-size: .85em; margin-top: .3em; }}
summary {{ cursor: pointer; color: #1565c0; }}
.chips {{ line-height: 1.9; margin: .3em 0; }}
.chips .label {{ font-weight: bold; color: {STATE_COLOURS["OK"]}; }}
.chip {{ display: inline-block; padding: 0 .5em; margin: 0 .15em; border-radius: .8em;
  background: #e8f5e9; color: #1b5e20; font-size: .8em; border: 1px solid #c8e6c9; }}
#chart-status:empty {{ display: none; }}
#chart-status {{ color: {STATE_COLOURS["ALARM"]}; font-weight: bold; }}
</style></head><body>
<h1>{html.escape(data.pipeline)} pipeline: <span class="badge {badge}">{verdict}</span></h1>
<p class=meta>{html.escape(verdict.capitalize())}{html.escape(because)}. Alarms: {alarm_summary}.
Stage <code>{html.escape(data.stage)}</code>, dashboard
<code>{html.escape(data.dashboard)}</code>, window {html.escape(data.window_start)} to
{html.escape(data.window_end)}; generated {html.escape(data.generated_at)} from the local cloud's
CloudWatch, DynamoDB and EMF log.</p>
<p id="chart-status" role="alert"></p>
<section class=intro>{markdown(data.intro)}</section>
<h2>Alarms</h2>
{alarms_html or "<p class=meta>No alarm is defined.</p>"}
<h2>Runs</h2>
<table><tr><th>#</th><th>run</th><th>started (UTC)</th><th>ingest</th><th>outcome</th>
{step_headers}</tr>{run_rows}</table>
<h2>Dashboard</h2>
<p class=meta>{html.escape(scope)}.</p>
<div class="grid">{cards}</div>
<script>
// A chart that fails to load is said at the top, in words; nothing is shown otherwise.
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) {{ return !(img.complete && img.naturalWidth > 0); }});
  images.forEach(function (img) {{
    img.setAttribute("data-loaded", String(broken.indexOf(img) < 0));
  }});
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-loaded", String(images.length - broken.length));
  if (broken.length) {{
    document.getElementById("chart-status").textContent =
      broken.length + " chart(s) failed to load: " +
      broken.map(function (img) {{ return img.getAttribute("src"); }}).join(", ");
  }}
}});
</script>
</body></html>
"""
