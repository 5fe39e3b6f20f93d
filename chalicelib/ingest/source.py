"""MooVitamix REST client: pagination, retries, deadlines, checks against what the API announced.

Retries live in urllib3 (`Retry` mounted on a `requests` adapter), so every transient failure
(429, 5xx, refused connections, read timeouts) is retried the same way with backoff; this module
only walks the pages and turns whatever is left into one clear `SourceError`. Items are returned
as served: the caller validates each one, so a single bad item is quarantined instead of
failing its whole page.

Two things no library does for us are written here by hand:

* a response has a total deadline (`PIPELINE_REQUEST_DEADLINE_S`; urllib3's timeouts apply
  per socket read, so a server dripping one byte every few seconds would otherwise never time
  out): a watchdog cuts the connection at the deadline, headers included
  (`chalicelib/request_deadline.py`), and the body is read streamed (`read1`, one socket read
  at a time) with the deadline and a size cap (`PIPELINE_MAX_RESPONSE_BYTES`) checked before
  the bytes pile up in memory;
* every page is checked against what the API announced (`total`, `pages`, `size`, `page`):
  a page holding fewer items than the announced total implies (an empty or short page before
  the last), more items than its `size` (a server ignoring `size`), a `total` that changes
  while the run pages through the resource (rows inserted or deleted: offsets shift, rows
  are skipped or read twice), a page serving the very items of an earlier page (pagination
  repeating itself) or overlapping the previous one, and a first page that reads differently
  when it is read again at the end of the walk, all fail the resource with a `SourceError`
  naming the URL and what happened. The run then says `failed` instead of passing an
  incomplete scan for complete; the next run reads everything again.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from chalicelib.ingest.request_deadline import (
    DeadlineAdapter,
    RequestDeadlineExceeded,
    request_deadline,
)
from chalicelib.observability.metrics import record_api_retry
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

USER_AGENT: Final = "moovitamix-pipeline/0.1 (ingest; +chalicelib/source.py)"
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
SNIPPET_CHARS: Final = 200
"""Longest piece of a body or error quoted in a `SourceError`: logs must stay readable."""
READ_CHUNK: Final = 64 * 1024
"""Most bytes asked of one socket read of a body."""
ERROR_BODY_BYTES: Final = 16 * 1024
"""Most bytes read of an error answer's body: only a snippet of it is quoted."""


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


class _Envelope(BaseModel):
    """The page envelope of the contract. Strict, so `"1"` or `true` is not a page number."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    items: list[Any]
    total: StrictInt = Field(ge=0)
    page: StrictInt = Field(ge=0)
    size: StrictInt = Field(ge=0)
    pages: StrictInt = Field(ge=0)


class CappedRetry(Retry):
    """`Retry` whose `Retry-After` wait never exceeds `backoff_max`.

    A server asking for `Retry-After: 3600` must not make a Lambda sleep an hour (it would time
    out instead, holding the concurrency slot); an unparseable `Retry-After` falls back to the
    exponential backoff instead of failing the request.
    """

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            seconds = super().parse_retry_after(retry_after)
        except InvalidHeader:
            return 0.0  # falsy: `sleep()` then uses the ordinary backoff
        return min(seconds, self.backoff_max)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        """Count each retry (the `ApiRetries` metric); an exhausted one raises, uncounted."""
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        record_api_retry(_resource_of(url), _retry_cause(response, error))
        return retry


def _resource_of(url: str | None) -> str:
    """`/users?page=2&size=100` -> `users`: the resource a retried request was for."""
    path = urlsplit(url or "").path.rstrip("/")
    return path.rsplit("/", 1)[-1][:64] or "unknown"


def _retry_cause(response: BaseHTTPResponse | None, error: Exception | None) -> str:
    if response is not None and not error:
        return str(response.status)
    if isinstance(error, NewConnectionError):  # a subclass of ConnectTimeoutError
        return "connection"
    if isinstance(error, ReadTimeoutError | ConnectTimeoutError):
        return "timeout"
    return "connection"


def build_session(settings: Settings) -> requests.Session:
    """One pooled, retrying session; share it for all resources so connections are reused.

    Status retries are not raised by urllib3 (`raise_on_status=False`): the last response comes
    back, so `fetch_pages` can report its status and body.
    """
    retry = CappedRetry(
        total=settings.max_retries,
        connect=settings.max_retries,
        read=settings.max_retries,  # read timeouts too: GET is idempotent
        status=settings.max_retries,
        other=0,  # e.g. TLS certificate errors: retrying will not heal them
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=settings.backoff_factor_s,
        backoff_jitter=settings.backoff_factor_s,
        backoff_max=settings.max_backoff_s,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    pool_size = max(settings.fetch_concurrency, 1)
    adapter = DeadlineAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=retry)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    return session


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

    Every page is checked against the first one (`_Walk`): same `total`, `pages` and `size`,
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
    _check_page_count(settings, base_url, last)
    walk = _Walk(settings.page_size, first, expected_total)
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
    walk: _Walk,
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


class _Walk:
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


def _check_page_count(settings: Settings, base_url: str, pages: int) -> None:
    """Fail fast when the API announces more pages than `max_pages` (a pagination loop)."""
    if pages > settings.max_pages:
        raise SourceError(
            f"pagination did not end after {settings.max_pages} pages: the API reports "
            f"{pages} pages (raise PIPELINE_MAX_PAGES if that is real)",
            base_url,
        )


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
    item_digests = [_item_digest(item) for item in envelope.items]
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
    """The error of a response cut at its total deadline (`chalicelib.request_deadline`)."""
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


def _item_digest(item: Any) -> bytes:
    """A hash of one item as served; never raises (an item that cannot be encoded is unique)."""
    try:
        encoded = json.dumps(item, sort_keys=True, ensure_ascii=False, default=str).encode(
            "utf-8", "surrogatepass"
        )
    except (ValueError, TypeError, RecursionError):
        encoded = repr(id(item)).encode()
    return hashlib.blake2b(encoded, digest_size=16).digest()


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
