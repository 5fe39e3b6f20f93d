"""Structured logging shared by the handlers.

Logs are JSON lines (Powertools Logger) with the run id, entity and step, and never a record's
payload at INFO: payloads may hold personal data. Page ids (`chalicelib/model/envelope.py`)
correlate a fetched page with the records stored from it; `PageTally` counts them per load
batch for the "batch loaded" line.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

SERVICE = "moovitamix"
"""Logger name; not the Chalice app name, whose logger Chalice sets to ERROR."""

logger = Logger(service=SERVICE)


class PageTally:
    """Counts per page id for one load batch: what the "batch loaded" log line reports."""

    def __init__(self) -> None:
        self.pages: dict[str, dict[str, int]] = {}

    def add(self, page: str | None, name: str, count: int = 1) -> None:
        counts = self.pages.setdefault(page or "unknown", {})
        counts[name] = counts.get(name, 0) + count

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {page: dict(counts) for page, counts in self.pages.items()}
