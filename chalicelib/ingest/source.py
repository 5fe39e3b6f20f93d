"""MooVitamix REST client: walk a resource's pages in order, within deadlines and size caps.

Retries happen in the session (urllib3 `Retry`, `chalicelib/ingest/source_session.py`), so
every transient failure is retried the same way with backoff; this module only walks the pages
and turns whatever is left into one clear `SourceError`. Items are returned as served: the
caller validates each one, so a single bad item is quarantined instead of failing its whole
page.

Two things no library does for us are written by hand:

* a response has a total deadline (`PIPELINE_REQUEST_DEADLINE_S`; urllib3's timeouts apply
  per socket read, so a server dripping one byte every few seconds would otherwise never time
  out): a watchdog cuts the connection at the deadline, headers included
  (`chalicelib/ingest/request_deadline.py`), and the body is read streamed here (`read1`, one
  socket read at a time) with the deadline and a size cap (`PIPELINE_MAX_RESPONSE_BYTES`)
  checked before the bytes pile up in memory;
* every page is checked against what the API announced (`total`, `pages`, `size`, `page`;
  `chalicelib/ingest/page_walk.py`): a resource whose pages do not add up fails with a
  `SourceError` naming the URL and what happened. The run then says `failed` instead of
  passing an incomplete scan for complete; the next run reads everything again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import requests
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError

from chalicelib.ingest.page import Page, SourceError
from chalicelib.ingest.page_walk import PageWalk, check_page_count, item_digest
from chalicelib.ingest.request_deadline import RequestDeadlineExceeded, request_deadline
from chalicelib.ingest.source_session import RETRY_STATUSES
from chalicelib.settings import Settings

SNIPPET_CHARS: Final = 200
"""Longest piece of a body or error quoted in a `SourceError`: logs must stay readable."""
READ_CHUNK: Final = 64 * 1024
"""Most bytes asked of one socket read of a body."""
ERROR_BODY_BYTES: Final = 16 * 1024
"""Most bytes read of an error answer's body: only a snippet of it is quoted."""


class _Envelope(BaseModel):
    """The page envelope of the contract. Strict, so `"1"` or `true` is not a page number."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    items: list[Any]
    total: StrictInt = Field(ge=0)
    page: StrictInt = Field(ge=0)
    size: StrictInt = Field(ge=0)
    pages: StrictInt = Field(ge=0)


def fetch_pages(
    session: requests.Session,
    settings: Settings,
    resource: str,
    first_page: int = 1,
    last_page: int | None = None,
    expected_total: int | None = None,
) -> Generator[Page, None, None]:
    """Yield the pages of `resource` in order, fetching ahead with bounded concurrency.

    Page `first_page` (1 unless an interrupted run resumes) is fetched first (and always
    yielded, even when empty, so the caller learns `total`); the next pages up to `pages` follow
    through a sliding window of at most 2 x `fetch_concurrency` requests submitted ahead, so
    memory stays bounded whatever the page count. Closing the generator early cancels what is
    queued and waits for what is running.

    Every page is checked against the first one (`PageWalk`): same `total`, `pages` and `size`,
    exactly the items that `total` implies, no repeated or overlapping content. When the walk
    reached its last page, page `first_page` is read once more and must read as it did at the
    start, or the source changed under the run. `expected_total` is the `total` a previous
    reading announced (a fan-out work item gets the one its planner read).

    Raises `SourceError` for anything that is not a well-formed, consistent page after retries,
    and when more than `settings.max_pages` pages would be fetched.

    `last_page` ends the walk early (a fan-out work item's range): no later page is fetched.
    """
    base_url = f"{str(settings.api_url).rstrip('/')}/{resource}"

    first = _fetch_page(session, settings, base_url, resource, first_page)
    last = max(first.pages, 1)
    check_page_count(settings, base_url, last)
    walk = PageWalk(settings.page_size, first, expected_total)
    if last_page is not None:
        last = min(last, last_page)
    yield first
    if last <= first_page:
        return  # one response: a consistent snapshot, nothing to re-read
    yield from _fetch_following(session, settings, base_url, resource, walk, last)
    again = _fetch_page(session, settings, base_url, resource, first_page)
    walk.check_reread(again)


def _fetch_following(
    session: requests.Session,
    settings: Settings,
    base_url: str,
    resource: str,
    walk: PageWalk,
    last: int,
) -> Generator[Page, None, None]:
    """Pages `walk.first.number + 1 .. last`, in order, a window of them in flight."""
    window = 2 * settings.fetch_concurrency
    pending: dict[int, Future[Page]] = {}
    next_to_submit = walk.first.number + 1
    next_to_yield = next_to_submit
    pool = ThreadPoolExecutor(
        max_workers=settings.fetch_concurrency, thread_name_prefix=f"source-{resource}"
    )
    try:
        while True:
            while next_to_submit <= last and len(pending) < window:
                pending[next_to_submit] = pool.submit(
                    _fetch_page, session, settings, base_url, resource, next_to_submit
                )
                next_to_submit += 1
            future = pending.pop(next_to_yield, None)
            if future is None:  # every page up to `last` has been yielded
                return
            page = future.result()
            next_to_yield += 1
            walk.check(page)
            yield page
    finally:
        for queued in pending.values():
            queued.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _fetch_page(
    session: requests.Session, settings: Settings, base_url: str, resource: str, number: int
) -> Page:
    """GET one page (urllib3 retries transient failures), within the deadline and the size
    cap, and check its envelope."""
    url = f"{base_url}?page={number}&size={settings.page_size}"
    deadline = time.monotonic() + settings.request_deadline_s
    read_timeout = min(settings.request_timeout_s, settings.request_deadline_s)
    with request_deadline(settings.request_deadline_s) as watch:
        try:
            response = session.get(
                url, timeout=(settings.request_timeout_s, read_timeout), stream=True
            )
        except RequestDeadlineExceeded as exc:  # a retry after the watchdog cut the request
            raise _too_slow(settings, url, None, None) from exc
        except requests.RequestException as exc:
            if watch.expired:
                raise _too_slow(settings, url, None, None) from exc
            raise SourceError(
                f"request failed (after up to {settings.max_retries} retries): {_describe(exc)}",
                url,
            ) from exc

        with response:
            status = response.status_code
            if not 200 <= status < 300:
                retried = (
                    f" after {settings.max_retries} retries" if status in RETRY_STATUSES else ""
                )
                body = _read_body(response, settings, url, deadline, limit=ERROR_BODY_BYTES)
                if watch.expired:
                    raise _too_slow(settings, url, status, len(body))
                raise SourceError(f"HTTP {status}{retried}: {_error_detail(body)}", url, status)
            try:
                body = _read_body(response, settings, url, deadline)
            except (requests.RequestException, ProtocolError, SourceError) as exc:
                if watch.expired:  # the watchdog cut the connection mid-body
                    raise _too_slow(settings, url, status, None) from exc
                raise
        if watch.expired:  # cut mid-body: what was read is not the whole answer
            raise _too_slow(settings, url, status, len(body))
    try:
        payload = json.loads(body)
    except RecursionError as exc:
        raise SourceError(
            "body is JSON nested too deeply to parse; the page cannot be read", url, status
        ) from exc
    except ValueError as exc:
        raise SourceError(
            f"body is not JSON: {_snippet(_text(body)) or '<empty>'}", url, status
        ) from exc
    try:
        envelope = _Envelope.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<body>'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise SourceError(f"not a page of the contract: {_snippet(problems)}", url, status) from exc
    if envelope.page != number:
        raise SourceError(
            f"asked for page {number} but the API answered page {envelope.page}", url, status
        )
    item_digests = [item_digest(item) for item in envelope.items]
    return Page(
        resource=resource,
        number=number,
        items=envelope.items,
        total=envelope.total,
        pages=envelope.pages,
        url=url,
        size=envelope.size,
        digest=hashlib.blake2b(b"".join(item_digests), digest_size=16).digest(),
        # rows only: `null` or `0` served twice (poison) is no sign of overlapping pages
        item_digests=frozenset(
            digest
            for digest, item in zip(item_digests, envelope.items, strict=True)
            if isinstance(item, dict) and item
        ),
    )


def _too_slow(settings: Settings, url: str, status: int | None, read: int | None) -> SourceError:
    """The error of a response cut at its total deadline (`chalicelib.ingest.request_deadline`)."""
    if status is None:
        progress = "its status line and headers were not complete"
    elif read is None:
        progress = "cut while its body was read"
    else:
        progress = f"{read:,} bytes of body read"
    return SourceError(
        f"response not complete within PIPELINE_REQUEST_DEADLINE_S "
        f"({settings.request_deadline_s:g} s; {progress}): the server answers too slowly",
        url,
        status,
    )


def _read_body(
    response: requests.Response,
    settings: Settings,
    url: str,
    deadline: float,
    limit: int | None = None,
) -> bytes:
    """The body, one socket read at a time, within `deadline` and the size cap.

    With `limit` (an error answer) only that many bytes are kept and the rest is not read.
    A body over `max_response_bytes` fails before it is all in memory (a `Content-Length`
    over it, before reading anything). The deadline is checked after every socket read, each
    bounded by the read timeout, so a response ends at the latest one read timeout past it.
    """
    cap = settings.max_response_bytes
    status = response.status_code
    announced = response.headers.get("Content-Length", "")
    if limit is None and announced.isdigit() and int(announced) > cap:
        raise SourceError(
            f"response of {int(announced):,} bytes is larger than PIPELINE_MAX_RESPONSE_BYTES "
            f"({cap:,}); nothing of it was read",
            url,
            status,
        )
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise _too_slow(settings, url, status, size)
            chunk = response.raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if limit is not None and size >= limit:
                chunks.append(chunk)
                return b"".join(chunks)[:limit]
            if size > cap:
                raise SourceError(
                    f"response larger than PIPELINE_MAX_RESPONSE_BYTES ({cap:,} bytes); "
                    "reading stopped there",
                    url,
                    status,
                )
            chunks.append(chunk)
    except (HTTPError, OSError) as exc:
        raise SourceError(
            f"reading the body failed after {size:,} bytes: "
            + _snippet(f"{type(exc).__name__}: {exc}"),
            url,
            status,
        ) from exc


def _describe(exc: requests.RequestException) -> str:
    """The root cause of a failed request, e.g. `NewConnectionError: ... Connection refused`.

    requests wraps urllib3's `MaxRetryError`, whose text starts with the pool and URL; the cause
    (`reason`) is the useful part and would be cut off by the snippet limit.
    """
    cause: BaseException = exc
    wrapped = exc.args[0] if exc.args else None
    if isinstance(wrapped, MaxRetryError) and wrapped.reason is not None:
        cause = wrapped.reason
    return _snippet(f"{type(cause).__name__}: {cause}")


def _error_detail(body: bytes) -> str:
    """FastAPI's `detail` when the body has one (422 validation errors), else the body."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, dict) and "detail" in payload:
        return _snippet(json.dumps(payload["detail"], ensure_ascii=False, default=str))
    return _snippet(_text(body)) or "<empty body>"


def _text(body: bytes) -> str:
    # Decode only a prefix: the body can be large.
    return body[: SNIPPET_CHARS * 4].decode("utf-8", errors="replace")


def _snippet(text: str) -> str:
    """One line of at most `SNIPPET_CHARS` characters, so an HTML page cannot flood the logs."""
    flat = " ".join(text.split())
    if len(flat) <= SNIPPET_CHARS:
        return flat
    return flat[: SNIPPET_CHARS - 1] + "…"
