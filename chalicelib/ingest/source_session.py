"""The HTTP session of the MooVitamix client: pooled connections, urllib3 retries, deadlines.

Retries live in urllib3 (`Retry` mounted on a `requests` adapter), so every transient failure
(429, 5xx, refused connections, read timeouts) is retried the same way with backoff; each retry
is counted (`ApiRetries`). The adapter cuts a request at its total deadline
(`chalicelib/ingest/request_deadline.py`).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Final, Self
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from chalicelib.ingest.request_deadline import DeadlineAdapter
from chalicelib.observability.metrics import record_api_retry
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

USER_AGENT: Final = "moovitamix-pipeline/0.1 (ingest; +chalicelib/ingest/source.py)"


RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


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
