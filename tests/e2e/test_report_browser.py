"""The health report as a person sees it: opened in headless Chromium, read back and photographed.

Two pages, both written by the CLI as a user gets them: `localcloud run` (one run, the page of
every run) and `localcloud report --runs 2`. Chromium dumps the DOM after the page's script ran
(every chart loaded, nothing left for the user to read that is not meant for them) and takes a
screenshot whose size and content are checked: the verdict badge and the charts' colours are
on screen, not a blank or broken page.

Needs Chromium (`tests/browser.py` says what to install when it is missing: the test fails
with that message, it is never skipped).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image as mpimg

from localcloud.cli import main
from localcloud.monitoring.health_page import STATE_COLOURS
from tests.browser import HEADLESS_FLAGS, chromium

pytestmark = pytest.mark.e2e

VIEWPORT = (1280, 2000)
TAB_BLUE = (31, 119, 180)
"""The first colour of matplotlib's tab10: the first bar of every chart."""


@dataclass
class Report:
    index: Path
    health: dict[str, Any]


def _browse(index: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            chromium(),
            *HEADLESS_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            "--force-device-scale-factor=1",
            "--virtual-time-budget=10000",
            *arguments,
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


class _Page(HTMLParser):
    """Images, the elements by id, and the text a reader sees (no script, style, attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}
        self.status_text = ""
        self.text: list[str] = []
        self.tags: list[str] = []
        self._hidden = 0
        self._in_status = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attributes)
        if tag == "body":
            self.body = attributes
        if tag in ("script", "style", "title"):
            self._hidden += 1
        self._in_status = attributes.get("id") == "chart-status"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "title"):
            self._hidden -= 1
        self._in_status = False

    def handle_data(self, data: str) -> None:
        if self._in_status:
            self.status_text += data
        if not self._hidden:
            self.text.append(data)

    @property
    def visible_text(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """The page of a single `run`, and of `report --runs 2`."""
    written: dict[str, Report] = {}
    one = tmp_path_factory.mktemp("one-run")
    assert main(["run", "--records", "8", "--state-dir", str(one / "state")]) == 0
    index = one / "state" / "report" / "index.html"
    written["one run"] = Report(index, json.loads((index.parent / "health.json").read_text()))
    two = tmp_path_factory.mktemp("two-runs")
    arguments = ["report", "--out", str(two / "out"), "--runs", "2", "--records", "8"]
    assert main([*arguments, "--state-dir", str(two / "state")]) == 0
    index = two / "out" / "index.html"
    written["two runs"] = Report(index, json.loads((index.parent / "health.json").read_text()))
    return written


@pytest.mark.parametrize("which", ["one run", "two runs"])
def test_every_chart_loads_and_the_page_shows_no_raw_markup_or_test_hooks(
    pages: dict[str, Report], which: str, tmp_path: Path
) -> None:
    report = pages[which]
    result = _browse(report.index, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    page = _Page()
    page.feed(result.stdout)

    charts = sorted((report.index.parent / "charts").glob("*.png"))
    assert charts
    assert len(page.images) == len(charts)
    assert all(image["data-loaded"] == "true" for image in page.images), page.images
    assert page.body["data-images"] == page.body["data-loaded"] == str(len(charts))
    assert page.status_text == ""  # said only when a chart fails to load

    text = page.visible_text
    for hook in ("data-loaded", "data-images", "checking charts", "charts loaded", "image-status"):
        assert hook not in text
    # the dashboard's Markdown is rendered, not shown raw
    assert "pre" not in page.tags
    assert "# moovitamix-local pipeline" not in text
    assert "`" not in text
    assert "Custom metrics: namespace MooVitamix/Pipeline" in text
    # tables are HTML, not pictures: every run and every alarm is in the text
    health = report.health
    runs, alarms = health["runs"], health["alarms"]
    assert len(runs) == (1 if which == "one run" else 2)
    for run in runs:
        assert run["run_id"] in text
    for alarm in alarms:
        assert alarm["name"] in text or alarm["name"].removeprefix("moovitamix-local-") in text
    assert all(chart.name.startswith("chart-") for chart in charts)  # no runs.png, alarms.png
    assert "healthy" in text


def _near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 8) -> int:
    target = np.array(colour, dtype=np.int16)
    return int((np.abs(pixels.astype(np.int16) - target).max(axis=-1) <= tolerance).sum())


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


@pytest.mark.parametrize("which", ["one run", "two runs"])
def test_a_screenshot_shows_the_verdict_and_the_charts(
    pages: dict[str, Report], which: str, tmp_path: Path
) -> None:
    shot = tmp_path / "report.png"
    result = _browse(pages[which].index, tmp_path / "profile", f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file()

    pixels = (mpimg.imread(shot)[..., :3] * 255).round().astype(np.uint8)
    height, width, _ = pixels.shape
    assert (width, height) == VIEWPORT
    background = _near(pixels, (250, 250, 250), tolerance=3)
    assert background < 0.9 * width * height, "the page is (almost) blank"
    colours = {tuple(colour) for colour in pixels[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 200  # text, tables and charts, not a flat page
    assert _near(pixels[:120], _rgb(STATE_COLOURS["OK"])) > 500  # the green "healthy" badge
    assert _near(pixels, TAB_BLUE) > 2000  # bars of the charts are on screen
