"""The health report's charts, drawn with matplotlib (Agg): one PNG per dashboard widget.

Over a single run (up to `MAX_BAR_RUNS`), every line is one labelled horizontal bar per run
(its value over the run): a run's few datapoints drawn as a time series would be isolated
dots. Over more runs, it is a time series with a distinct colour (and, past 20 lines, dash)
per line, a marker per datapoint, each run's start marked, and the legend outside the plot.
Alarm thresholds near the data are drawn; far ones are named in the title.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localcloud.monitoring.health_report import Chart, HealthData, Line, RunSummary

DPI = 100
WIDTH_IN = 6.4
THRESHOLD_COLOUR = "#c62828"
MAX_BAR_RUNS = 6
"""Up to this many runs, each line is drawn as a bar per run; past it, as a time series."""


def run_values(line: Line, runs: int) -> list[float | None]:
    """The line's value in each run; [] when it has none in any (or was collected without)."""
    values = line.runs if len(line.runs) == runs else []
    return values if any(value is not None for value in values) else []


def colours(count: int) -> list[tuple[Any, str]]:
    """(colour, line style) per line: distinct colours, then dashes once colours run out."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    size = 10 if count <= 10 else 20
    styles = ("-", "--", ":")
    return [
        (palette(index % size), styles[(index // size) % len(styles)]) for index in range(count)
    ]


def number(value: float) -> str:
    """A value as a person reads it: 1,234 / 50 / 0.037 / 504."""
    if value == int(value) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def label(line: Line) -> str:
    """The line's label, with its statistic unless that is a plain count or already said."""
    short = {"Sum": "", "Maximum": "max", "Minimum": "min", "Average": "avg"}
    stat = short.get(line.stat, line.stat)
    return f"{line.label} ({stat})" if stat and stat not in line.label else line.label


def run_label(index: int, run: RunSummary) -> str:
    return f"run {index} ({run.started_at[11:19]}, {run.outcome})"


def draw_bars(chart: Chart, lines: list[Line], data: HealthData, path: Path) -> None:
    """One horizontal bar per line and run, each with its value written at its end.

    With one run every line has its own colour; with several, each run has its colour (legend
    above the plot) and a line's bars sit together, so runs compare at a glance.
    """
    import matplotlib.pyplot as plt

    runs = len(data.runs)
    matrix = [run_values(line, runs) for line in lines]
    per_line = 0.3 if runs == 1 else 0.1 + 0.17 * runs
    figure, axes = plt.subplots(
        figsize=(WIDTH_IN, 0.9 + per_line * len(lines) + (0.3 if runs > 1 else 0)),
        dpi=DPI,
        layout="constrained",
    )
    thickness = 0.8 / runs
    highest = max([value or 0.0 for values in matrix for value in values] + [0.0])
    scale = highest or 1.0
    run_colours = [colour for colour, _ in colours(runs)]
    line_colours = [colour for colour, _ in colours(len(lines))]
    for run in range(runs):
        offsets = [row + (run - (runs - 1) / 2) * thickness for row in range(len(lines))]
        values = [matrix[row][run] for row in range(len(lines))]
        axes.barh(
            offsets,
            [value or 0.0 for value in values],
            height=thickness * 0.9,
            color=line_colours if runs == 1 else run_colours[run],
            label=run_label(run + 1, data.runs[run]),
        )
        for offset, value in zip(offsets, values, strict=True):
            axes.text(
                (value or 0.0) + scale * 0.01,
                offset,
                "no data" if value is None else number(value),
                va="center",
                ha="left",
                fontsize=7 if runs > 1 else 8,
                color="#9e9e9e" if value is None else "#212121",
            )
    axes.set_yticks(range(len(lines)), [label(line) for line in lines], fontsize=8)
    axes.invert_yaxis()
    shown, off_scale = _thresholds(chart, highest)
    for name, value in shown:
        axes.axvline(value, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1)
        _label_at_top(axes, f"{name} {number(value)}", value, (3, -9), THRESHOLD_COLOUR)
    axes.set_xlim(0, max([scale * 1.15, *(value * 1.08 for _, value in shown)]))
    axes.tick_params(axis="x", labelsize=7)
    axes.grid(alpha=0.3, axis="x")
    axes.spines[["top", "right"]].set_visible(False)
    scope = "value over the run" if runs == 1 else "value over each run"
    axes.set_title(_title(scope, off_scale), fontsize=8, loc="left", color="#616161")
    if runs > 1:
        figure.legend(loc="outside upper right", ncol=min(runs, 3), fontsize=7, frameon=False)
    figure.savefig(path, format="png")
    plt.close(figure)


def draw_series(chart: Chart, lines: list[Line], data: HealthData, path: Path) -> None:
    """Several runs: every line over the window, its colour its own, the legend outside."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(WIDTH_IN, 3.4), dpi=DPI, layout="constrained")
    highest = 0.0
    for line, (colour, style) in zip(lines, colours(len(lines)), strict=True):
        moments = [_moment(moment) for moment in line.timestamps]
        axes.plot(
            moments,
            line.values,
            color=colour,
            linestyle=style,
            linewidth=1.4,
            marker="o",
            markersize=4,
            label=label(line),
        )
        highest = max(highest, *line.values)
        if len(line.values) == 1:  # a lone point says its value
            axes.annotate(
                number(line.values[0]),
                (moments[0], line.values[0]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=colour,
            )
    shown, off_scale = _thresholds(chart, highest)
    for name, value in shown:
        axes.axhline(value, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1, label=name)
    start, end = _moment(data.window_start), _moment(data.window_end)
    for index, run in enumerate(data.runs, start=1):
        if run.started_at:
            moment = _moment(run.started_at)
            axes.axvline(moment, color="#9e9e9e", linestyle=":", linewidth=1)
            _label_at_top(axes, f"run {index}", moment, (2, -10), "#616161")
    axes.set_xlim(start, end)
    axes.set_ylim(bottom=0, top=max(highest, *(value for _, value in shown), 1.0) * 1.15)
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
        frameon=False,
        ncol=2 if len(lines) > 14 else 1,
    )
    axes.set_title(
        _title(f"{data.period_s} s per point", off_scale), fontsize=8, loc="left", color="#616161"
    )
    figure.savefig(path, format="png")
    plt.close(figure)


def _label_at_top(axes: Any, text: str, x: float, offset: tuple[int, int], colour: str) -> None:
    """A small label at the top of the plot, at data position `x` (a threshold, a run start)."""
    axes.annotate(
        text,
        (x, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=offset,
        textcoords="offset points",
        color=colour,
        fontsize=7,
    )


def _thresholds(chart: Chart, highest: float) -> tuple[list[tuple[str, float]], list[str]]:
    """Alarm thresholds near the data are drawn; far ones are named in the title instead."""
    shown, off_scale = [], []
    for name, value in chart.thresholds:
        if value <= max(highest, 1.0) * 3:
            shown.append((name, value))
        else:
            off_scale.append(f"{name} at {number(value)}")
    return shown, off_scale


def _title(scope: str, off_scale: list[str]) -> str:
    extra = f"; {', '.join(off_scale)}" if off_scale else ""
    return f"{scope}{extra}"


def _moment(text: str) -> float:
    """An ISO time as matplotlib's date number."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(datetime.fromisoformat(text)))
