"""MooVitamix REST client: pagination, retries, timeouts.

Retries live in urllib3 (`Retry` mounted on a `requests` adapter), so every transient failure
(429, 5xx, refused connections, read timeouts) is retried the same way with backoff; this module
only walks the pages and turns whatever is left into one clear `SourceError`. Items are returned
as served: the caller validates each one, so a single bad item is quarantined instead of
failing its whole page.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from chalicelib.metrics import record_api_retry
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

USER_AGENT: Final = "moovitamix-pipeline/0.1 (ingest; +chalicelib/source.py)"
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
SNIPPET_CHARS: Final = 200
"""Longest piece of a body or error quoted in a `SourceError`: logs must stay readable."""


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
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=retry)
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
) -> Generator[Page, None, None]:
    """Yield the pages of `resource` in order, fetching ahead with bounded concurrency.

    Page `first_page` (1 unless an interrupted run resumes) is fetched first (and always
    yielded, even when empty, so the caller learns `total`); the next pages up to `pages` follow
    through a sliding window of at most 2 x `fetch_concurrency` requests submitted ahead, so
    memory stays bounded whatever the page count. Iteration stops after page `pages` (following
    a later page that reports more) or at the first empty page, which is not yielded. Closing
    the generator early cancels what is queued and waits for what is running.

    Raises `SourceError` for anything that is not a well-formed page after retries, and when more
    than `settings.max_pages` pages would be fetched.

    `last_page` ends the walk early (a fan-out work item's range): no later page is fetched.
    """
    base_url = f"{str(settings.api_url).rstrip('/')}/{resource}"

    first = _fetch_page(session, settings, base_url, resource, first_page)
    last = max(first.pages, 1)
    _check_page_count(settings, base_url, last)
    if last_page is not None:
        last = min(last, last_page)
    yield first
    if not first.items or last <= first_page:
        return

    window = 2 * settings.fetch_concurrency
    pending: dict[int, Future[Page]] = {}
    next_to_submit = first_page + 1
    next_to_yield = first_page + 1
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
            if not page.items:
                return
            if page.pages > last and (last_page is None or last < last_page):
                last = page.pages if last_page is None else min(page.pages, last_page)
                _check_page_count(settings, base_url, last)
            yield page
    finally:
        for queued in pending.values():
            queued.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


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
    """GET one page (urllib3 retries transient failures) and check its envelope."""
    url = f"{base_url}?page={number}&size={settings.page_size}"
    try:
        response = session.get(url, timeout=settings.request_timeout_s)
    except requests.RequestException as exc:
        raise SourceError(
            f"request failed (after up to {settings.max_retries} retries): {_describe(exc)}", url
        ) from exc

    status = response.status_code
    if not 200 <= status < 300:
        retried = f" after {settings.max_retries} retries" if status in RETRY_STATUSES else ""
        raise SourceError(f"HTTP {status}{retried}: {_error_detail(response)}", url, status)
    try:
        payload = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SourceError(
            f"body is not JSON: {_snippet(_body_text(response)) or '<empty>'}", url, status
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
    return Page(
        resource=resource,
        number=number,
        items=envelope.items,
        total=envelope.total,
        pages=envelope.pages,
    )


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


def _error_detail(response: requests.Response) -> str:
    """FastAPI's `detail` when the body has one (422 validation errors), else the body."""
    try:
        payload = response.json()
    except (requests.RequestException, ValueError):
        payload = None
    if isinstance(payload, dict) and "detail" in payload:
        return _snippet(json.dumps(payload["detail"], ensure_ascii=False, default=str))
    return _snippet(_body_text(response)) or "<empty body>"


def _body_text(response: requests.Response) -> str:
    # Decode only a prefix: the body can be large, and charset detection on all of it is slow.
    return response.content[: SNIPPET_CHARS * 4].decode("utf-8", errors="replace")


def _snippet(text: str) -> str:
    """One line of at most `SNIPPET_CHARS` characters, so an HTML page cannot flood the logs."""
    flat = " ".join(text.split())
    if len(flat) <= SNIPPET_CHARS:
        return flat
    return flat[: SNIPPET_CHARS - 1] + "…"
