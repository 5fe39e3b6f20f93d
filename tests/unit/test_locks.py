"""The dependency locks: what is committed matches its input, and the offline check catches drift.

`python -m infra.locks check` (part of `make lint`) needs no network: it compares each lock's
recorded input digest and its pins with the `.in` file. These tests break a copy of the locks
in each way a person would (edit an input, hand-edit a pin, drop hashes, drop a package) and
expect the check to name the problem; and they check that `make` installs from the locks.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from infra import locks
from infra.stages import PROJECT_ROOT
from tests.helpers.factories import make_commands

FILES = ("requirements.in", "requirements.txt", "requirements-dev.in", "requirements-dev.txt")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in FILES:
        shutil.copyfile(PROJECT_ROOT / name, tmp_path / name)
    return tmp_path


def restamp(project: Path, lock: locks.Lock) -> None:
    """Record the current inputs' digest, as `make lock` would, to isolate one check."""
    locks.stamp(project / lock.lock, locks.inputs_digest(project / lock.source))


def test_the_committed_locks_match_their_inputs() -> None:
    assert locks.problems() == []
    assert locks.main(["check"]) == 0


def test_every_lambda_requirement_is_pinned_with_hashes_and_boto3_ships() -> None:
    pins = locks.locked_pins(PROJECT_ROOT / "requirements.txt")
    assert {"boto3", "botocore", "s3transfer", "pynamodb", "psycopg"} <= set(pins)
    assert all(pin.hashes >= 1 for pin in pins.values())
    # one consistent SDK: boto3 and botocore of the same release line
    assert pins["boto3"].version.split(".")[:2] == pins["botocore"].version.split(".")[:2]
    dev = locks.locked_pins(PROJECT_ROOT / "requirements-dev.txt")
    for name, pin in pins.items():
        assert dev[name].version == pin.version, f"tests would run another {name}"


def test_an_input_edited_without_relocking_fails(project: Path) -> None:
    with (project / "requirements.in").open("a") as file:
        file.write("rich==15.*\n")
    found = locks.problems(project)
    assert any(
        "requirements.txt was not compiled from the current requirements.in" in p for p in found
    )
    assert any("requirements.txt does not pin rich==15.*" in problem for problem in found)
    # the dev lock includes requirements.in too
    assert any(problem.startswith("requirements-dev.txt was not compiled") for problem in found)


def test_a_pin_outside_the_input_range_fails(project: Path) -> None:
    lock = project / "requirements.txt"
    lock.write_text(
        re.sub(r"^pydantic==2\.14\.\d+", "pydantic==2.99.0", lock.read_text(), flags=re.M)
    )
    restamp(project, locks.LOCKS[0])
    found = locks.problems(project)
    assert any(
        "requirements.txt pins pydantic==2.99.0, which requirements.in does not allow" in problem
        for problem in found
    )


def test_a_pin_without_hashes_fails(project: Path) -> None:
    lock = project / "requirements-dev.txt"
    text = re.sub(
        r"(^rich==[^\s]+) \\\n(    --hash=sha256:[0-9a-f]+ ?\\?\n)+",
        r"\1\n",
        lock.read_text(),
        flags=re.M,
    )
    assert text != lock.read_text()
    lock.write_text(text)
    found = locks.problems(project)
    assert any(re.search(r"requirements-dev.txt: rich==\S+ has no --hash", p) for p in found)


def test_a_dev_pin_that_differs_from_the_lambda_lock_fails(project: Path) -> None:
    """No input names botocore (boto3 pulls it in): only the Lambda lock says which one ships."""
    lock = project / "requirements-dev.txt"
    shipped = locks.locked_pins(project / "requirements.txt")["botocore"].version
    other = "1.44.0" if shipped != "1.44.0" else "1.44.1"
    text = re.sub(r"^botocore==\S+", f"botocore=={other}", lock.read_text(), flags=re.M)
    assert text != lock.read_text()
    lock.write_text(text)
    found = locks.problems(project)
    assert found == [
        f"requirements-dev.txt pins botocore=={other}, but requirements.txt "
        f"(-c in requirements-dev.in) pins {shipped}: run `make lock`"
    ]


def test_a_dropped_package_fails(project: Path) -> None:
    lock = project / "requirements.txt"
    lines = lock.read_text().splitlines(keepends=True)
    start = next(index for index, line in enumerate(lines) if line.startswith("orjson=="))
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    lock.write_text("".join(lines[:start] + lines[end:]))
    restamp(project, locks.LOCKS[0])
    assert any("requirements.txt does not pin orjson==3.13.*" in p for p in locks.problems(project))


def test_make_installs_from_the_locks_and_lint_checks_them() -> None:
    install = make_commands("-B", ".venv/.installed")
    assert "pip install --quiet --require-hashes -r requirements-dev.txt" in install
    assert "--upgrade" not in install  # nothing outside the lock
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): requirements\.txt requirements-dev\.txt$", makefile, re.M)
    assert "-m infra.locks check" in make_commands("-W", ".venv/.installed", "lint")
    assert "-m infra.locks compile" in make_commands("-W", ".venv/.installed", "lock")
