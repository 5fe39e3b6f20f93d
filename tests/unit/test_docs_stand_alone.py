"""The README and docs stand alone: every link leads to a file of the repository (and, with an
anchor, to a heading of it), and no file of the project refers to a place outside it.

A clone holds nothing but the repository, so a link to a sibling folder (the source API's
contract once lived in one) or to a heading that was renamed leaves the reader with nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chalicelib.settings import Settings
from infra.stages import PROJECT_ROOT

SKIPPED_DIRS = {".git", ".venv", ".localcloud", ".hypothesis", "__pycache__", "out"}
TEXT_SUFFIXES = {".md", ".py", ".json", ".toml", ".yml", ".yaml", ".sh", ".in", ".txt", ".sql"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def project_files() -> list[Path]:
    found: list[Path] = []
    for path in PROJECT_ROOT.rglob("*"):
        relative = path.relative_to(PROJECT_ROOT)
        if any(part in SKIPPED_DIRS or part.endswith("_cache") for part in relative.parts):
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name == "Makefile"):
            found.append(path)
    return found


def markdown_files() -> list[Path]:
    return [path for path in project_files() if path.suffix == ".md"]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to -."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^(    |\t).*$", "", path.read_text(), flags=re.M)  # code blocks
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {slug(heading) for heading in HEADING.findall(text)}


def test_the_project_has_documents_to_check() -> None:
    names = {path.relative_to(PROJECT_ROOT).as_posix() for path in markdown_files()}
    assert {"README.md", "docs/source-api.md", "docs/deploy.md", "docs/operations.md"} <= names


@pytest.mark.parametrize(
    "document", markdown_files(), ids=lambda path: path.relative_to(PROJECT_ROOT).as_posix()
)
def test_every_link_of_a_document_stays_in_the_repository(document: Path) -> None:
    broken: list[str] = []
    for target in LINK.findall(document.read_text()):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:: outside on purpose, not a file
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (document.parent / file_part).resolve() if file_part else document
        if not resolved.is_relative_to(PROJECT_ROOT):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert broken == []


OUTSIDE = "../" + "shared"
"""The sibling folder the README once linked (spelt in two parts so this file does not match)."""


def test_no_file_refers_to_the_shared_folder_outside_the_repository() -> None:
    offenders = [
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in project_files()
        if OUTSIDE in path.read_text(errors="replace")
    ]
    assert offenders == []


def test_the_readme_lists_every_setting_with_its_default() -> None:
    """The README's configuration table is complete: one row per field of `Settings`."""
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(
            r"^\| `(PIPELINE_[A-Z0-9_]+)` \| ([^|]+) \|",
            (PROJECT_ROOT / "README.md").read_text(),
            re.M,
        )
    }
    for name, field in Settings.model_fields.items():
        variable = f"PIPELINE_{name.upper()}"
        assert variable in rows, f"{variable} is not in the README's configuration table"
        shown = rows[variable].strip().strip("`")
        default = field.default
        if default is None:
            assert shown == "(none)", variable
        elif isinstance(default, bool):
            assert shown == str(default).lower(), variable
        elif isinstance(default, (int, float)):
            assert float(shown) == default, variable
        elif isinstance(default, (list, tuple)):
            assert shown == ",".join(default), variable
        else:  # a URL is shown without pydantic's trailing slash
            assert shown == str(default).removesuffix("/"), variable
