"""`make browser` / `make test` without a browser: say what to install, never a traceback.

`tests/browser.py` runs before the virtual environment exists, on any machine; here it runs
with a PATH that holds no browser (and, for `--install`, an `apt-get` that fails, as it does
without root, without network or off Debian).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import BROWSER_TESTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _run(
    path: Path, *arguments: str, chromium: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": str(path), "HOME": str(path)}
    if chromium is not None:
        environment["CHROMIUM"] = chromium
    return subprocess.run(
        [sys.executable, "-m", "tests.browser", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("arguments", [(), ("--install",)])
def test_no_browser_says_what_to_install_for_which_test(
    tmp_path: Path, arguments: tuple[str, ...]
) -> None:
    failing_apt = tmp_path / "apt-get"
    failing_apt.write_text("#!/bin/sh\necho 'E: not this machine' >&2\nexit 100\n")
    failing_apt.chmod(0o755)
    result = _run(tmp_path, *arguments)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for hint in ("apt-get install chromium", "dnf install chromium", "brew install", "CHROMIUM="):
        assert hint in result.stderr
    for test_file in BROWSER_TESTS:
        assert test_file in result.stderr
        assert (PROJECT_ROOT / test_file).is_file()
    assert "Every other test runs without it." in result.stderr


def test_a_chromium_variable_that_names_nothing_is_reported(tmp_path: Path) -> None:
    result = _run(tmp_path, chromium=str(tmp_path / "no-such-chrome"))
    assert result.returncode == 1
    assert f"CHROMIUM={tmp_path / 'no-such-chrome'} is not an executable" in result.stderr


def test_make_test_goes_on_without_a_browser_and_make_browser_does_not() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    browser_recipe = makefile.split("\nbrowser:", 1)[1].split("\n\n", 1)[0]
    assert "-m tests.browser --install || true" in test_recipe
    assert "-m tests.browser --install" in browser_recipe
    assert "|| true" not in browser_recipe
