"""A run's reconciliation result: per entity fetched = stored + superseded + quarantined + missing.

Kept apart from the reconciler so that readers of a verdict (run outcomes, reports) need not
load the sinks and the ledger walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class EntityBalance:
    """Per entity: fetched = stored + quarantined + missing."""

    fetched: int = 0
    stored: int = 0
    quarantined: int = 0
    missing: int = 0
    missing_records: list[str] = field(default_factory=list)
    superseded: int = 0
    """Fetched records whose key every sink holds at a newer version, or that the run fetched
    again (a repeat): accounted for, not stored as such."""

    @property
    def quarantined_ratio(self) -> float:
        return self.quarantined / self.fetched if self.fetched else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "fetched": self.fetched,
            "stored": self.stored,
            "quarantined": self.quarantined,
            "missing": self.missing,
            "missing_records": list(self.missing_records),
            "superseded": self.superseded,
        }


@dataclass
class Reconciliation:
    run_id: str
    status: str
    entities: dict[str, EntityBalance] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    quality_failures: list[str] = field(default_factory=list)
    """Entities whose quarantined share is above the quality gate."""
    error: str | None = None
    """The exception that interrupted this run's reconciliation, if one did."""
    pages_balanced: int = 0
    """Pages settled from the read-back and the load's evidence."""
    pages_by_key: int = 0
    """Pages that did not balance and were checked key by key."""
    continuing: bool = False
    """Stopped short of the Lambda's time; a new invocation resumes at the saved position."""

    @property
    def balanced(self) -> bool:
        return all(balance.missing == 0 for balance in self.entities.values())

    def as_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            "status": self.status,
            "entities": {name: balance.as_dict() for name, balance in self.entities.items()},
            "reasons": list(self.reasons),
        }
        if self.quality_failures:
            summary["quality_failures"] = list(self.quality_failures)
        if self.error is not None:
            summary["error"] = self.error
        return summary


def restore_position(saved: Any, result: Reconciliation) -> str | None:
    """The balances an interrupted reconciliation saved; returns its last page id."""
    if not isinstance(saved, str) or not saved:
        return None
    position = orjson.loads(saved)
    for name, counts in position.get("entities", {}).items():
        balance = result.entities.setdefault(name, EntityBalance())
        for field_name in ("fetched", "stored", "quarantined", "missing", "superseded"):
            setattr(balance, field_name, int(counts.get(field_name, 0)))
        balance.missing_records = list(counts.get("missing_records", []))
    page_id = position.get("page_id")
    return str(page_id) if page_id else None
