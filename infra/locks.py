"""The dependency locks: compile them (`make lock`) and check them offline (`make lint`).

    python -m infra.locks compile   # uv pip compile, every version pinned, every file hashed
    python -m infra.locks check     # no network: does each lock still match its input?

Two locks, each compiled by uv from a hand-written input:

- `requirements.in` -> `requirements.txt`: what the Lambda functions run. Chalice reads
  `requirements.txt` when it builds the package, so `chalice deploy`/`chalice package` ship
  exactly the locked, hash-checked set;
- `requirements-dev.in` -> `requirements-dev.txt`: the Lambda set (constrained to its lock)
  plus the tools, tests and the local cloud; `make` installs it with `--require-hashes`.

uv writes the lock but records nothing about the input it came from, and re-resolving to
compare needs the index. So `compile` stamps each lock with the SHA-256 of its inputs (the
input file and every file it includes with `-r`/`-c`), and `check` recomputes it: an input
edited without `make lock` fails the check. It also checks what the digest cannot: every
requirement of the input is pinned in the lock at a version it allows, every package of a
`-c` constraint lock is pinned at that lock's version, and every pin carries hashes (a hand
edit of the lock fails too). Written by hand because neither uv nor pip-tools
checks a lock against its input without resolving again.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess  # runs uv with fixed arguments  # nosec B404
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.11"
"""The oldest Python the project supports, and the Lambda runtime Chalice picks from it."""
COMPILE_COMMAND = "make lock"
DIGEST_PREFIX = "# inputs-sha256: "


@dataclass(frozen=True)
class Lock:
    """One hand-written input and the lock compiled from it."""

    source: str
    lock: str


LOCKS = (
    Lock("requirements.in", "requirements.txt"),
    Lock("requirements-dev.in", "requirements-dev.txt"),
)
"""In order: the dev input is constrained by the Lambda lock, so that one is compiled first."""


class LockError(RuntimeError):
    """A lock does not match its input; the message says which and how to fix it."""


# --------------------------------------------------------------------------------------------
# reading inputs and locks
# --------------------------------------------------------------------------------------------


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with backslash continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            yield line


def included_files(path: Path) -> list[Path]:
    """`path` and every file it includes with `-r`/`-c`, recursively, each once."""
    seen: list[Path] = []

    def visit(current: Path) -> None:
        if current in seen:
            return
        seen.append(current)
        for line in _logical_lines(current.read_text()):
            option, _, argument = line.partition(" ")
            if option in ("-r", "-c", "--requirement", "--constraint"):
                visit((current.parent / argument.strip()).resolve())

    visit(path.resolve())
    return seen


def constraint_files(path: Path) -> list[Path]:
    """The files `path` (or a file it includes with `-r`) names with `-c`."""
    found: list[Path] = []
    for line in _logical_lines(path.read_text()):
        option, _, argument = line.partition(" ")
        if option in ("-r", "--requirement"):
            found += constraint_files(path.parent / argument.strip())
        elif option in ("-c", "--constraint"):
            found.append(path.parent / argument.strip())
    return found


def input_requirements(path: Path) -> list[Requirement]:
    """The requirements of an input file and of the files it includes with `-r`."""
    requirements: list[Requirement] = []
    for line in _logical_lines(path.read_text()):
        option, _, argument = line.partition(" ")
        if option in ("-r", "--requirement"):
            requirements += input_requirements(path.parent / argument.strip())
        elif option.startswith("-"):
            continue  # -c constraints and index options pin nothing themselves
        else:
            requirements.append(Requirement(line))
    return requirements


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: int
    line: str


def locked_pins(path: Path) -> dict[str, Pin]:
    """The `name==version` pins of a lock, by canonical name."""
    pins: dict[str, Pin] = {}
    for line in _logical_lines(path.read_text()):
        if line.startswith("-"):
            raise LockError(f"{path.name}: unexpected option line {line.split()[0]!r}")
        requirement_text, *options = line.split(" --hash=")
        try:
            requirement = Requirement(requirement_text.strip())
        except InvalidRequirement as error:
            raise LockError(f"{path.name}: cannot read {requirement_text!r}: {error}") from None
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise LockError(f"{path.name}: {requirement.name} is not pinned with == ({line})")
        name = canonicalize_name(requirement.name)
        pins[name] = Pin(name, specifiers[0].version, len(options), requirement_text.strip())
    return pins


def inputs_digest(source: Path) -> str:
    """SHA-256 over the input file and every file it includes, by name and content.

    Lines uv writes itself (the lock's own header) are not part of any input, so a lock
    included with `-c` is hashed without its digest line: compiling it again with the same
    pins does not change the digest of the inputs that include it.
    """
    digest = hashlib.sha256()
    for path in included_files(source):
        content = "\n".join(
            line for line in path.read_text().splitlines() if not line.startswith(DIGEST_PREFIX)
        )
        digest.update(path.name.encode() + b"\0" + content.encode() + b"\0")
    return digest.hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX).strip()
    return None


# --------------------------------------------------------------------------------------------
# check and compile
# --------------------------------------------------------------------------------------------


def problems(root: Path = PROJECT_ROOT) -> list[str]:
    """Everything that makes a lock disagree with its input; empty when all match."""
    found: list[str] = []
    for lock in LOCKS:
        source, output = root / lock.source, root / lock.lock
        if not output.exists():
            found.append(f"{lock.lock} is missing: run `{COMPILE_COMMAND}`")
            continue
        recorded = recorded_digest(output)
        if recorded != inputs_digest(source):
            names = ", ".join(path.name for path in included_files(source))
            found.append(
                f"{lock.lock} was not compiled from the current {names}: run `{COMPILE_COMMAND}`"
            )
        try:
            pins = locked_pins(output)
        except LockError as error:
            found.append(str(error))
            continue
        for unhashed in pins.values():
            if unhashed.hashes == 0:
                found.append(f"{lock.lock}: {unhashed.line} has no --hash")
        for constraint in constraint_files(source):
            try:
                constrained = locked_pins(constraint)
            except LockError as error:
                found.append(str(error))
                continue
            for name, shared in pins.items():
                wanted = constrained.get(name)
                if wanted is not None and wanted.version != shared.version:
                    found.append(
                        f"{lock.lock} pins {name}=={shared.version}, but {constraint.name} "
                        f"(-c in {lock.source}) pins {wanted.version}: run `{COMPILE_COMMAND}`"
                    )
        for requirement in input_requirements(source):
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            name = canonicalize_name(requirement.name)
            pin = pins.get(name)
            if pin is None:
                found.append(f"{lock.lock} does not pin {requirement} of {lock.source}")
            elif not requirement.specifier.contains(pin.version, prereleases=True):
                found.append(
                    f"{lock.lock} pins {pin.name}=={pin.version}, which {lock.source} "
                    f"does not allow ({requirement}): run `{COMPILE_COMMAND}`"
                )
    return found


def compile_locks(root: Path = PROJECT_ROOT, upgrade: bool = False) -> None:
    """`uv pip compile` each input into its lock (keeping pins that still fit) and stamp it."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise LockError("uv is not installed: `make venv` installs it from requirements-dev.txt")
    for lock in LOCKS:
        command = [
            uv,
            "pip",
            "compile",
            "--quiet",
            "--universal",
            "--python-version",
            PYTHON_VERSION,
            "--generate-hashes",
            "--custom-compile-command",
            COMPILE_COMMAND,
            *(["--upgrade"] if upgrade else []),
            lock.source,
            "--output-file",
            lock.lock,
        ]
        print("$ " + " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=root, check=True)  # noqa: S603 - fixed arguments  # nosec B603
        stamp(root / lock.lock, inputs_digest(root / lock.source))


def stamp(lock: Path, digest: str) -> None:
    """Put the inputs' digest right after uv's header comment."""
    lines = [line for line in lock.read_text().splitlines() if not line.startswith(DIGEST_PREFIX)]
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1
    lines.insert(header, DIGEST_PREFIX + digest)
    lock.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.locks",
        description="Compile the dependency locks (needs the package index) or check them "
        "against their inputs (offline).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compile_parser = commands.add_parser(
        "compile", help="uv pip compile requirements*.in into the hashed locks"
    )
    compile_parser.add_argument(
        "--upgrade", action="store_true", help="take the newest versions the inputs allow"
    )
    commands.add_parser("check", help="fail when a lock does not match its input (offline)")
    args = parser.parse_args(argv)
    if args.command == "compile":
        try:
            compile_locks(upgrade=args.upgrade)
        except (LockError, subprocess.CalledProcessError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    found = problems()
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    if found:
        return 1
    print(", ".join(f"{lock.lock} matches {lock.source}" for lock in LOCKS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
