"""Headless Chromium for the health-report test: find it, or say exactly what to install.

Only `tests/e2e/test_report_browser.py` needs a browser. `make browser` and `make test` install
Debian's `chromium` package when they run as root on a machine with apt-get; anywhere else
they print what to install (`make browser` then exits 1, `make test` goes on), and the report
test fails with the same message. Nothing else in the suite depends on it.

    python -m tests.browser            # print the browser found, or what to install (exit 1)
    python -m tests.browser --install  # the same, installing it with apt-get where possible

Standard library only: `make browser` runs it before the virtual environment exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAC_APPS = (
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
)
BROWSER_TESTS = ("tests/e2e/test_report_browser.py",)
"""The only test files that need a browser (the hint names them)."""
INSTALL_HINT = f"""\
The health-report test ({", ".join(BROWSER_TESTS)}) opens the report in headless Chromium,
and none was found (looked for $CHROMIUM, then chromium, chromium-browser, google-chrome).
Install one, or point CHROMIUM at its executable:
  Debian:           sudo apt-get install chromium      (or, as root: make browser)
  Ubuntu:           sudo snap install chromium
  Fedora:           sudo dnf install chromium
  Arch:             sudo pacman -S chromium
  macOS:            brew install --cask chromium
  any other:        CHROMIUM=/path/to/chrome make test
Every other test runs without it."""

HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
"""No sandbox (CI runs as root), no network of its own, nothing that phones home."""


def find_chromium() -> str | None:
    """The browser's executable: `$CHROMIUM`, then the usual names on PATH, then macOS apps."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        return shutil.which(chosen) or (chosen if Path(chosen).is_file() else None)
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return next((app for app in MAC_APPS if Path(app).is_file()), None)


def missing_message() -> str:
    """What to install (and what is wrong with `$CHROMIUM`, when it is set)."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        return f"CHROMIUM={chosen} is not an executable.\n{INSTALL_HINT}"
    return INSTALL_HINT


def chromium() -> str:
    """The browser's executable, or an AssertionError that says what to install."""
    path = find_chromium()
    if path is None:
        raise AssertionError(missing_message())
    return path


def _can_apt_get() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.browser",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="install Debian's chromium with apt-get when missing (root on Debian only)",
    )
    args = parser.parse_args(argv)
    path = find_chromium()
    if path is None and args.install and _can_apt_get():
        print("installing chromium with apt-get (for the health-report test)", flush=True)
        try:
            for command in (
                ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "chromium"],
            ):
                # fixed arguments, no shell (ruff S603/S607, bandit B603/B607)
                subprocess.run(command, check=True)  # nosec B603
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"apt-get could not install chromium: {error}", file=sys.stderr)
        path = find_chromium()
    if path is None:
        print(missing_message(), file=sys.stderr)
        return 1
    print(f"headless browser for the report test: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
