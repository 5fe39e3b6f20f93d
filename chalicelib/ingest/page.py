"""What the MooVitamix source serves: a page as served, and the error that names where it failed.

Shared by the client (`chalicelib/ingest/source.py`), the checks of a walk through the pages
(`chalicelib/ingest/page_walk.py`) and the ingest, which reports a `SourceError` with its URL
and status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SourceError(RuntimeError):
    """Clear error naming the URL and, when there was one, the HTTP status."""

    url: str
    status: int | None

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        where = f"GET {url}" if status is None else f"GET {url} -> HTTP {status}"
        super().__init__(f"MooVitamix API: {message} [{where}]")
        self.message = message
        self.url = url
        self.status = status

    def __reduce__(self) -> tuple[type[SourceError], tuple[str, str, int | None]]:
        # Keeps the error picklable (e.g. across processes) despite the extra arguments.
        return (type(self), (self.message, self.url, self.status))


@dataclass(frozen=True, slots=True)
class Page:
    """One page as served; `items` are raw JSON values, not validated here."""

    resource: str
    number: int
    items: list[Any]
    total: int
    pages: int
    url: str = field(default="", compare=False)
    """The URL the page was read from, for errors and logs."""
    size: int = field(default=0, compare=False)
    """The `size` the API announced for this page."""
    digest: bytes = field(default=b"", compare=False, repr=False)
    """Hash of the page's items as served: the same items give the same digest."""
    item_digests: frozenset[bytes] = field(default=frozenset(), compare=False, repr=False)
    """Hash of each row (non-empty object) as served, to see pages that overlap."""
