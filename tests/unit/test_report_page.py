"""The health report's pure parts: run intervals, numbers and labels, the dashboard's Markdown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from localcloud.monitoring.health_charts import colours, label, number
from localcloud.monitoring.health_page import markdown
from localcloud.monitoring.health_report import Line, RunSummary, run_bounds

T0 = datetime(2026, 11, 30, 13, 0, 0, tzinfo=UTC)


def _run(moment: datetime | None) -> RunSummary:
    started = moment.isoformat() if moment else ""
    return RunSummary("r", started, "published", "succeeded", {})


@given(
    gaps=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=12),
    fractions=st.lists(st.integers(min_value=0, max_value=999_999), min_size=12, max_size=12),
    tail=st.integers(min_value=1, max_value=5000),
    probe=st.integers(min_value=0, max_value=70_000),
)
def test_every_moment_after_the_first_run_belongs_to_exactly_one_run(
    gaps: list[int], fractions: list[int], tail: int, probe: int
) -> None:
    """Runs start in seconds of their own (as `begin_run` makes them); intervals tile the window."""
    seconds = [sum(gaps[: index + 1]) for index in range(len(gaps))]
    starts = [
        T0 + timedelta(seconds=second, microseconds=fraction)
        for second, fraction in zip(seconds, fractions, strict=False)
    ]
    end = T0 + timedelta(seconds=seconds[-1] + tail)
    bounds = run_bounds([_run(moment) for moment in starts], end)

    assert all(bound is not None for bound in bounds)
    intervals = [bound for bound in bounds if bound is not None]
    assert intervals[0][0] == starts[0].replace(microsecond=0)
    assert intervals[-1][1] == end
    for (_, stop), (begin, _) in pairwise(intervals):
        assert stop == begin
    moment = T0 + timedelta(seconds=probe)
    owners = [index for index, (begin, stop) in enumerate(intervals) if begin <= moment < stop]
    inside = starts[0].replace(microsecond=0) <= moment < end
    assert len(owners) == (1 if inside else 0)


def test_a_run_without_a_start_has_no_interval_and_takes_nothing_from_the_others() -> None:
    bounds = run_bounds(
        [_run(T0), _run(None), _run(T0 + timedelta(seconds=10))], T0 + timedelta(seconds=20)
    )
    assert bounds == [
        (T0, T0 + timedelta(seconds=10)),
        None,
        (T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)),
    ]


def test_numbers_read_as_a_person_writes_them() -> None:
    assert [number(value) for value in (0.0, 50.0, 1234.0, 504.062, 0.04247, 27.43)] == [
        "0",
        "50",
        "1,234",
        "504",
        "0.0425",
        "27.4",
    ]


def test_labels_say_the_statistic_only_when_it_adds_something() -> None:
    def line(text: str, stat: str) -> Line:
        return Line(text, stat, [], [], None)

    assert label(line("users fetched", "Sum")) == "users fetched"
    assert label(line("freshness", "Maximum")) == "freshness (max)"
    assert label(line("users p90 (dynamodb)", "p90")) == "users p90 (dynamodb)"
    assert label(line("load users (postgres)", "p90")) == "load users (postgres) (p90)"


def test_the_dashboard_markdown_is_rendered_and_raw_html_in_it_is_escaped() -> None:
    rendered = markdown("# moovitamix-dev pipeline\nStage `dev`. <script>alert(1)</script>")
    assert rendered.startswith("<h1>moovitamix-dev pipeline</h1>")
    assert "<code>dev</code>" in rendered
    assert "<script>" not in rendered
    assert "&lt;script&gt;" in rendered


@given(count=st.integers(min_value=1, max_value=60))
def test_every_line_of_a_chart_is_drawn_its_own_way(count: int) -> None:
    """Up to 10 lines, 10 colours; up to 20, 20 colours; beyond, the colours repeat dashed."""
    styles = colours(count)
    assert len(styles) == count
    assert len(set(styles)) == count  # no two lines look alike
    distinct = {colour for colour, _ in styles}
    assert len(distinct) == min(count, 10 if count <= 10 else 20)
