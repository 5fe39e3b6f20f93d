"""The names of a run's counters in the runs table: the one place they are spelled.

Every step of a run adds to counters on the run's item (`runs/manifest.py`), and the
reconcile, the run outcome, the local cloud's run report and the bench read them back. A
name written one way and read another would read as zero, silently; so writers and readers
build every name here.
"""

from typing import Final, Literal

Reconciled = Literal["stored", "quarantined", "missing", "superseded"]
QuarantineStep = Literal["ingest", "load"]

WRITTEN_PREFIX: Final = "written."
PAGES_BALANCED: Final = "reconciled.pages_balanced"
PAGES_BY_KEY: Final = "reconciled.pages_by_key"


def fetched(entity: str) -> str:
    """Records of `entity` the source served in the run."""
    return f"fetched.{entity}"


def published(entity: str) -> str:
    """Records of `entity` the ingest put on the stream."""
    return f"published.{entity}"


def unchanged(entity: str) -> str:
    """Records of `entity` skipped by change detection (every sink already held them)."""
    return f"unchanged.{entity}"


def quarantined(step: QuarantineStep, entity: str) -> str:
    """Records of `entity` a step quarantined with a reason."""
    return f"quarantined.{step}.{entity}"


def written(sink: str, entity: str) -> str:
    """Records of `entity` the load handled in `sink` (stored, or a newer version kept)."""
    return f"{WRITTEN_PREFIX}{sink}.{entity}"


def written_to(sink: str) -> str:
    """The page ledger's per-sink count of records the load handled on one page."""
    return f"{WRITTEN_PREFIX}{sink}"


def reconciled(kind: Reconciled, entity: str) -> str:
    """The reconcile's verdict for `entity`: records stored, quarantined, missing, superseded."""
    return f"reconciled.{kind}.{entity}"
