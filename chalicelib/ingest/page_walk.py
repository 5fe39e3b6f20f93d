"""Checks every page of a walk through a resource must pass against what the API announced.

No library checks a paginated REST answer against its own envelope, so it is written here: a
page holding fewer items than the announced total implies (an empty or short page before the
last), more items than its `size` (a server ignoring `size`), a `total` that changes while the
run pages through the resource (rows inserted or deleted: offsets shift, rows are skipped or
read twice), a page serving the very items of an earlier page (pagination repeating itself) or
overlapping the previous one, and a first page that reads differently when it is read again at
the end of the walk, all fail the resource with a `SourceError` naming the URL and what
happened.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from chalicelib.ingest.page import Page, SourceError
from chalicelib.settings import Settings


class PageWalk:
    """What the first page of a walk announced, and the checks every later page must pass.

    A page is complete when it holds exactly the items its announced `total` implies at its
    position: `size` items before the last page, the rest on the last one, none after it.
    Anything else means rows the run did not read (a short or empty page), rows it would read
    twice (a server ignoring `size`), or a source that changed under the run.
    """

    def __init__(self, size: int, first: Page, expected_total: int | None) -> None:
        self.size = size
        self.first = first
        self.previous = first
        self.seen: dict[bytes, int] = {}
        if expected_total is not None and first.total != expected_total:
            raise SourceError(
                f"the source changed under the run: {first.resource} announced total "
                f"{expected_total} when the run planned its pages, {first.total} now",
                first.url,
                200,
            )
        self._check_alone(first)
        self._remember(first)

    def check(self, page: Page) -> None:
        first = self.first
        if (page.total, page.pages) != (first.total, first.pages):
            raise SourceError(
                f"the source changed under the run: page {first.number} announced total "
                f"{first.total} / pages {first.pages}, page {page.number} announces total "
                f"{page.total} / pages {page.pages} (rows added or removed while the run read "
                "them shift every later page; run again once the source is stable)",
                page.url,
                200,
            )
        self._check_alone(page)
        earlier = self.seen.get(page.digest)
        if earlier is not None and page.items:
            raise SourceError(
                f"pagination repeats itself: page {page.number} serves exactly the items of "
                f"page {earlier}",
                page.url,
                200,
            )
        shared = len(page.item_digests & self.previous.item_digests)
        if shared and page.number == self.previous.number + 1:
            raise SourceError(
                f"pages overlap: page {page.number} serves {shared} item(s) that page "
                f"{self.previous.number} served too (rows shifted while the run read them, or "
                "the API pages inconsistently); nothing was counted twice, the run fails",
                page.url,
                200,
            )
        self._remember(page)

    def check_reread(self, again: Page) -> None:
        """The first page read again at the end of the walk must read as it did at the start."""
        first = self.first
        if (again.total, again.pages, again.digest) != (first.total, first.pages, first.digest):
            what = (
                f"total {first.total} -> {again.total}"
                if again.total != first.total
                else "its items changed"
            )
            raise SourceError(
                f"the source changed under the run: page {first.number} read again after the "
                f"last page differs ({what}); rows the run read may have moved past it",
                again.url,
                200,
            )

    def _check_alone(self, page: Page) -> None:
        """The checks a page passes on its own: its envelope is consistent and complete."""
        size = self.size
        if page.size != size:
            raise SourceError(
                f"asked for size {size} but the API answered size {page.size}", page.url, 200
            )
        if len(page.items) > size:
            raise SourceError(
                f"page {page.number} holds {len(page.items)} items, more than its size {size}: "
                "the API ignores `size`, and reading on would fetch the same rows many times",
                page.url,
                200,
            )
        if page.pages != math.ceil(page.total / size) and (page.total, page.pages) != (0, 1):
            raise SourceError(
                f"inconsistent page envelope: total {page.total} at size {size} makes "
                f"{math.ceil(page.total / size)} pages, the API announces {page.pages}",
                page.url,
                200,
            )
        expected = max(0, min(size, page.total - (page.number - 1) * size))
        if len(page.items) != expected:
            raise SourceError(
                f"incomplete page: page {page.number} of {page.pages} holds {len(page.items)} "
                f"items, the announced total {page.total} implies {expected}"
                + (" (an empty page where rows were announced)" if not page.items else ""),
                page.url,
                200,
            )

    def _remember(self, page: Page) -> None:
        if page.items:
            self.seen.setdefault(page.digest, page.number)
        self.previous = page


def check_page_count(settings: Settings, base_url: str, pages: int) -> None:
    """Fail fast when the API announces more pages than `max_pages` (a pagination loop)."""
    if pages > settings.max_pages:
        raise SourceError(
            f"pagination did not end after {settings.max_pages} pages: the API reports "
            f"{pages} pages (raise PIPELINE_MAX_PAGES if that is real)",
            base_url,
        )


def item_digest(item: Any) -> bytes:
    """A hash of one item as served; never raises (an item that cannot be encoded is unique)."""
    try:
        encoded = json.dumps(item, sort_keys=True, ensure_ascii=False, default=str).encode(
            "utf-8", "surrogatepass"
        )
    except (ValueError, TypeError, RecursionError):
        encoded = repr(id(item)).encode()
    return hashlib.blake2b(encoded, digest_size=16).digest()
