"""Tests of the MooVitamix REST client against a real local HTTP server.

The server is real (werkzeug via pytest-httpserver), so urllib3's retries, timeouts and
connection pooling are exercised as in production. It is threaded: concurrency and read
timeouts cannot be observed on a server that handles one request at a time.
"""

from __future__ import annotations

import json
import math
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from urllib3.util.retry import Retry
from werkzeug import Request, Response

from chalicelib.ingest.page import Page, SourceError
from chalicelib.ingest.source import fetch_pages
from chalicelib.ingest.source_session import USER_AGENT, CappedRetry, build_session
from chalicelib.settings import Settings

Handler = Callable[[Request], Response]


@pytest.fixture(scope="module")
def make_httpserver() -> Iterator[HTTPServer]:
    """Overrides pytest-httpserver's server for this module: threaded, on an IPv4 port."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def make_settings(server: HTTPServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_url": server.url_for("/").rstrip("/"),
        "page_size": 10,
        "fetch_concurrency": 4,
        "request_timeout_s": 2.0,
        "max_retries": 3,
        "backoff_factor_s": 0,
        "max_backoff_s": 0.05,
        "max_pages": 1000,
    }
    values.update(overrides)
    return Settings(**values)


def fetch_all(settings: Settings, resource: str = "users") -> list[Page]:
    with build_session(settings) as session:
        return list(fetch_pages(session, settings, resource))


def json_response(payload: Any, status: int = 200, **headers: str) -> Response:
    return Response(json.dumps(payload), status, headers, content_type="application/json")


def source_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("source-")]


class FakeApi:
    """Serves `total` rows by the contract; records every request; thread-safe.

    `announce` controls the `pages` field: "exact" as upstream, "overstated" (more pages than
    there are rows, so the client must stop at the first empty page) or "growing" (each page
    announces one more page than itself, up to the real count).
    """

    def __init__(
        self,
        total: int,
        *,
        announce: str = "exact",
        extra_pages: int = 0,
        delay: Callable[[int], float] | float = 0.0,
    ) -> None:
        self.total = total
        self.announce = announce
        self.extra_pages = extra_pages
        self.delay = delay
        self.lock = threading.Lock()
        self.requested: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, request: Request) -> Response:
        page = int(request.args["page"])
        size = int(request.args["size"])
        with self.lock:
            self.requested.append(page)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            pause = self.delay(page) if callable(self.delay) else self.delay
            if pause:
                time.sleep(pause)
            return json_response(self.envelope(page, size))
        finally:
            with self.lock:
                self.in_flight -= 1

    def real_pages(self, size: int) -> int:
        return math.ceil(self.total / size)

    def envelope(self, page: int, size: int) -> dict[str, Any]:
        start = (page - 1) * size
        items = [{"id": i, "name": f"row {i}"} for i in range(start, min(start + size, self.total))]
        pages = self.real_pages(size)
        if self.announce == "overstated":
            pages += self.extra_pages
        elif self.announce == "growing":
            pages = min(page + 1, pages)
        return {"items": items, "total": self.total, "page": page, "size": size, "pages": pages}


class Scripted:
    """Answers the first requests from a script (responses or pauses), then delegates."""

    def __init__(self, script: list[Response | float], then: Handler) -> None:
        self.script = list(script)
        self.then = then
        self.lock = threading.Lock()
        self.calls = 0

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.calls += 1
            step = self.script.pop(0) if self.script else None
        if isinstance(step, Response):
            return step
        if isinstance(step, float):
            time.sleep(step)  # longer than the client's read timeout
        return self.then(request)


def serve(server: HTTPServer, handler: Handler, resource: str = "users") -> None:
    server.expect_request(f"/{resource}").respond_with_handler(handler)


# ---------------------------------------------------------------------------- pagination


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    total=st.integers(min_value=0, max_value=130),
    size=st.integers(min_value=1, max_value=100),
    concurrency=st.integers(min_value=1, max_value=4),
    announce=st.sampled_from(["exact", "overstated", "growing"]),
    extra_pages=st.integers(min_value=1, max_value=6),
)
def test_pagination_yields_every_row_once_in_order(
    make_httpserver: HTTPServer,
    total: int,
    size: int,
    concurrency: int,
    announce: str,
    extra_pages: int,
) -> None:
    # The module-scoped server, cleared per example: hypothesis runs many examples in one
    # test call, so the function-scoped `httpserver` fixture would not be reset between them.
    server = make_httpserver
    server.clear()
    api = FakeApi(total, announce=announce, extra_pages=extra_pages)
    serve(server, api)
    settings = make_settings(server, page_size=size, fetch_concurrency=concurrency)

    real = api.real_pages(size)
    inconsistent = (announce == "growing" and real > 2) or (
        announce == "overstated" and (real, extra_pages) != (0, 1)  # 0 rows, 1 page: tolerated
    )
    if inconsistent:
        # `pages` disagrees with `total` (or changes page after page): never a silent success
        with pytest.raises(SourceError, match=r"inconsistent page envelope|changed under the run"):
            fetch_all(settings)
        assert not source_threads()
        return
    pages = fetch_all(settings)

    expected_pages = max(api.real_pages(size), 1)  # page 1 is yielded even when empty
    assert [page.number for page in pages] == list(range(1, expected_pages + 1))
    assert [item["id"] for page in pages for item in page.items] == list(range(total))
    assert all(page.resource == "users" and page.total == total for page in pages)
    assert all(len(page.items) == size for page in pages[:-1])
    assert all(0 < len(page.items) <= size for page in pages[1:])
    # no page fetched twice, but page 1, read again at the end of a walk of several pages
    reread = [1] if expected_pages > 1 else []
    assert sorted(api.requested) == sorted([*range(1, expected_pages + 1), *reread])
    assert not source_threads()


def test_request_shape_and_user_agent(httpserver: HTTPServer) -> None:
    api = FakeApi(25)
    serve(httpserver, api, "listen_history")
    settings = make_settings(httpserver, page_size=10)

    pages = fetch_all(settings, "listen_history")

    assert [(page.number, len(page.items), page.pages) for page in pages] == [
        (1, 10, 3),
        (2, 10, 3),
        (3, 5, 3),
    ]
    assert pages[0] == Page("listen_history", 1, pages[0].items, 25, 3)
    request, _ = httpserver.log[0]
    assert request.args.to_dict() == {"page": "1", "size": "10"}
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.method == "GET"


def test_more_pages_announced_than_the_total_allows_fails(httpserver: HTTPServer) -> None:
    # Announces 50 pages but its total is 3 pages of rows: a later page would come back empty.
    api = FakeApi(30, announce="overstated", extra_pages=47)
    serve(httpserver, api)

    with pytest.raises(
        SourceError, match="total 30 at size 10 makes 3 pages, the API announces 50"
    ):
        fetch_all(make_settings(httpserver, fetch_concurrency=2))

    assert api.requested == [1]


def test_empty_resource_yields_page_one(httpserver: HTTPServer) -> None:
    serve(httpserver, FakeApi(0))

    pages = fetch_all(make_settings(httpserver))

    assert pages == [Page("users", 1, [], 0, 0)]
    assert len(httpserver.log) == 1


def test_a_page_announcing_more_pages_is_a_source_that_changed(httpserver: HTTPServer) -> None:
    def growing(request: Request) -> Response:  # every page one more row, one more page
        page = int(request.args["page"])
        rows = [{"id": i} for i in range((page - 1) * 10, page * 10)]
        return json_response(
            {"items": rows, "total": 10 * page + 1, "page": page, "size": 10, "pages": page + 1}
        )

    serve(httpserver, growing)

    with pytest.raises(SourceError, match="changed under the run") as caught:
        fetch_all(make_settings(httpserver, max_pages=1000))

    assert "page 1 announced total 11 / pages 2, page 2 announces total 21" in str(caught.value)
    assert "page=2" in caught.value.url
    assert len(httpserver.log) <= 2
    assert not source_threads()


def test_never_ending_pagination_repeating_itself_is_stopped(httpserver: HTTPServer) -> None:
    def endless(request: Request) -> Response:  # the same rows on every page, without end
        page = int(request.args["page"])
        rows = [{"id": i} for i in range(10)]
        return json_response(
            {"items": rows, "total": 10**6, "page": page, "size": 10, "pages": 10**5}
        )

    serve(httpserver, endless)
    settings = make_settings(httpserver, max_pages=10**6, fetch_concurrency=1)

    with pytest.raises(SourceError, match="page 2 serves exactly the items of page 1"):
        fetch_all(settings)

    assert len(httpserver.log) <= 2 + 2  # page 1, page 2 and the window ahead
    assert not source_threads()


def test_absurd_page_count_fails_before_fetching_more(httpserver: HTTPServer) -> None:
    serve(
        httpserver,
        lambda request: json_response(
            {"items": [{"id": 1}], "total": 10**9, "page": 1, "size": 1, "pages": 10**9}
        ),
    )

    with pytest.raises(SourceError, match="did not end after 1000 pages"):
        fetch_all(make_settings(httpserver))

    assert len(httpserver.log) == 1


def test_server_ignoring_page_parameter_is_a_contract_violation(httpserver: HTTPServer) -> None:
    # Always serves page 1: without the check the client would loop (or duplicate rows).
    serve(httpserver, lambda request: json_response(FakeApi(30).envelope(1, 10)))

    with pytest.raises(SourceError, match="asked for page 2 but the API answered page 1") as caught:
        fetch_all(make_settings(httpserver))

    assert "page=2" in caught.value.url
    assert caught.value.status == 200


def test_pages_yielded_in_order_although_completed_out_of_order(httpserver: HTTPServer) -> None:
    # Early pages are the slowest, so later pages complete first.
    api = FakeApi(120, delay=lambda page: 0.005 * (13 - page))
    serve(httpserver, api)

    pages = fetch_all(make_settings(httpserver, fetch_concurrency=4))

    assert [page.number for page in pages] == list(range(1, 13))
    assert [item["id"] for page in pages for item in page.items] == list(range(120))


# ---------------------------------------------------------------------------- concurrency


def test_concurrency_is_bounded(httpserver: HTTPServer) -> None:
    api = FakeApi(400, delay=0.02)  # 40 pages
    serve(httpserver, api)
    settings = make_settings(httpserver, fetch_concurrency=4)

    pages = fetch_all(settings)

    assert len(pages) == 40
    assert 1 < api.max_in_flight <= settings.fetch_concurrency
    # Connection reuse cannot be observed here: werkzeug's server closes every connection.
    # `test_build_session_configuration` checks the pool size instead.


def test_single_worker_fetches_sequentially(httpserver: HTTPServer) -> None:
    api = FakeApi(50, delay=0.005)
    serve(httpserver, api)

    pages = fetch_all(make_settings(httpserver, fetch_concurrency=1))

    assert len(pages) == 5
    assert api.max_in_flight == 1


def test_window_bounds_prefetch_and_close_cancels(httpserver: HTTPServer) -> None:
    api = FakeApi(2000)  # 200 pages
    serve(httpserver, api)
    settings = make_settings(httpserver, fetch_concurrency=2)

    with build_session(settings) as session:
        pages = fetch_pages(session, settings, "users")
        consumed = [next(pages).number for _ in range(3)]
        time.sleep(0.3)  # a slow consumer: the fetchers must not run ahead
        assert consumed == [1, 2, 3]
        assert max(api.requested) <= 3 + 2 * settings.fetch_concurrency
        pages.close()

        assert not source_threads()
        requested = len(api.requested)
        time.sleep(0.1)
        assert len(api.requested) == requested  # nothing fetched after close


# ---------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(httpserver: HTTPServer, status: int) -> None:
    handler = Scripted([Response("oops", status), Response("oops", status)], FakeApi(15))
    serve(httpserver, handler)

    pages = fetch_all(make_settings(httpserver, max_retries=3))

    assert [page.number for page in pages] == [1, 2]
    assert handler.calls == 5  # 2 failures, pages 1 and 2, page 1 read again at the end


class RecordedSleeps:
    """Stands in for the `time` module of urllib3's retry code: records its sleeps."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> RecordedSleeps:
    import urllib3.util.retry

    recorded = RecordedSleeps()
    monkeypatch.setattr(urllib3.util.retry, "time", recorded)
    return recorded


def test_429_with_retry_after_is_retried(
    httpserver: HTTPServer, retry_sleeps: RecordedSleeps
) -> None:
    limited = Response("slow down", 429, {"Retry-After": "1"})
    handler = Scripted([limited], FakeApi(5))
    serve(httpserver, handler)

    pages = fetch_all(make_settings(httpserver, max_backoff_s=0.05))

    assert [page.number for page in pages] == [1]
    assert handler.calls == 2
    assert retry_sleeps.sleeps == [0.05]  # Retry-After 1, capped at max_backoff_s


def test_absurd_retry_after_is_capped(httpserver: HTTPServer, retry_sleeps: RecordedSleeps) -> None:
    serve(httpserver, lambda request: Response("later", 429, {"Retry-After": "3600"}))

    with pytest.raises(SourceError) as caught:
        fetch_all(make_settings(httpserver, max_retries=3, max_backoff_s=0.05))

    assert retry_sleeps.sleeps == [0.05, 0.05, 0.05]  # never the hour the server asked for
    assert caught.value.status == 429
    assert len(httpserver.log) == 4


def test_unparseable_retry_after_falls_back_to_backoff(httpserver: HTTPServer) -> None:
    handler = Scripted([Response("later", 503, {"Retry-After": "soon-ish"})], FakeApi(5))
    serve(httpserver, handler)

    assert [page.number for page in fetch_all(make_settings(httpserver))] == [1]
    assert handler.calls == 2


def test_exhausted_retries_report_the_last_status(httpserver: HTTPServer) -> None:
    serve(httpserver, lambda request: Response("<h1>Service Unavailable</h1>", 503))

    with pytest.raises(SourceError) as caught:
        fetch_all(make_settings(httpserver, max_retries=2))

    error = caught.value
    assert error.status == 503
    assert "page=1" in error.url
    assert error.url in str(error)
    assert "503" in str(error)
    assert "Service Unavailable" in str(error)
    assert len(httpserver.log) == 3


def test_no_retries_configured(httpserver: HTTPServer) -> None:
    serve(httpserver, lambda request: Response("down", 503))

    with pytest.raises(SourceError):
        fetch_all(make_settings(httpserver, max_retries=0))

    assert len(httpserver.log) == 1


def test_failure_on_a_later_page_surfaces_in_order(httpserver: HTTPServer) -> None:
    api = FakeApi(100)

    def handler(request: Request) -> Response:
        if request.args["page"] == "4":
            return Response("broken", 500)
        return api(request)

    serve(httpserver, handler)
    settings = make_settings(httpserver)
    seen: list[int] = []

    with build_session(settings) as session, pytest.raises(SourceError) as caught:  # noqa: PT012
        for page in fetch_pages(session, settings, "users"):
            seen.append(page.number)

    assert seen == [1, 2, 3]
    assert caught.value.status == 500
    assert "page=4" in caught.value.url
    assert not source_threads()


def test_read_timeout_is_retried(httpserver: HTTPServer) -> None:
    handler = Scripted([0.6], FakeApi(5))
    serve(httpserver, handler)

    pages = fetch_all(make_settings(httpserver, request_timeout_s=0.2))

    assert [page.number for page in pages] == [1]
    assert handler.calls == 2


def test_read_timeouts_exhausted(httpserver: HTTPServer) -> None:
    handler = Scripted([0.5, 0.5], FakeApi(5))
    serve(httpserver, handler)

    with pytest.raises(SourceError, match=r"(?i)read timed out") as caught:
        fetch_all(make_settings(httpserver, request_timeout_s=0.15, max_retries=1))

    assert caught.value.status is None
    assert handler.calls == 2
    # the server answers the abandoned requests after the client gave up; let it, so that its
    # log entries do not land in the next test's log
    for _ in range(100):
        if len(httpserver.log) == 2:
            break
        time.sleep(0.05)


def test_connection_refused_names_the_url() -> None:
    # A bound socket that does not listen: connections to it are refused.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        settings = Settings(
            api_url=f"http://127.0.0.1:{port}",
            max_retries=2,
            backoff_factor_s=0,
            max_backoff_s=0.05,
            request_timeout_s=1.0,
        )
        with pytest.raises(SourceError) as caught:
            fetch_all(settings, "tracks")

    error = caught.value
    assert error.status is None
    assert error.url == f"http://127.0.0.1:{port}/tracks?page=1&size={settings.page_size}"
    assert error.url in str(error)
    assert "refused" in str(error).lower()


# ---------------------------------------------------------------------------- bad answers


def test_422_reports_detail_without_retry(httpserver: HTTPServer) -> None:
    detail = [
        {
            "type": "less_than_equal",
            "loc": ["query", "size"],
            "msg": "Input should be less than or equal to 100",
            "input": "500",
        }
    ]
    httpserver.expect_request("/users").respond_with_json({"detail": detail}, status=422)

    with pytest.raises(SourceError, match="less than or equal to 100") as caught:
        fetch_all(make_settings(httpserver))

    assert caught.value.status == 422
    assert len(httpserver.log) == 1


def test_404_is_not_retried(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/songs").respond_with_data("Not Found", status=404)

    with pytest.raises(SourceError, match="Not Found") as caught:
        fetch_all(make_settings(httpserver), "songs")

    assert caught.value.status == 404
    assert len(httpserver.log) == 1


def test_html_body_is_not_json_and_snippet_is_capped(httpserver: HTTPServer) -> None:
    body = "<html><body>" + "maintenance " * 20_000 + "</body></html>"
    httpserver.expect_request("/users").respond_with_data(body, content_type="text/html")

    with pytest.raises(SourceError, match="not JSON: <html><body>maintenance") as caught:
        fetch_all(make_settings(httpserver))

    assert caught.value.status == 200
    assert len(str(caught.value)) < 400


def test_empty_body_is_not_json(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/users").respond_with_data("")

    with pytest.raises(SourceError, match="not JSON: <empty>"):
        fetch_all(make_settings(httpserver))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ([], "<body>"),
        ({"total": 1, "page": 1, "size": 10, "pages": 1}, "items: Field required"),
        ({"items": {"id": 1}, "total": 1, "page": 1, "size": 10, "pages": 1}, "items"),
        ({"items": [], "total": "1", "page": 1, "size": 10, "pages": 1}, "total"),
        ({"items": [], "total": 1, "page": 1, "size": 10, "pages": True}, "pages"),
        ({"items": [], "total": 1, "page": 1, "size": 10, "pages": 1.5}, "pages"),
        ({"items": [], "total": -1, "page": 1, "size": 10, "pages": 1}, "total"),
        ({"items": [], "total": 1, "page": None, "size": 10, "pages": 1}, "page"),
        ({"items": [], "total": 1, "page": 1, "pages": 1}, "size"),
    ],
)
def test_wrong_envelope_shape(httpserver: HTTPServer, payload: Any, problem: str) -> None:
    httpserver.expect_request("/users").respond_with_json(payload)

    with pytest.raises(SourceError, match="not a page of the contract") as caught:
        fetch_all(make_settings(httpserver))

    assert problem in str(caught.value)
    assert caught.value.status == 200


def test_items_are_returned_raw_for_the_caller_to_validate(httpserver: HTTPServer) -> None:
    items = [{"id": 1}, "not an object", None, {"id": "x", "name": "'; DROP TABLE users; -- 🎵"}]
    httpserver.expect_request("/tracks").respond_with_json(
        {"items": items, "total": 4, "page": 1, "size": 10, "pages": 1}
    )

    pages = fetch_all(make_settings(httpserver), "tracks")

    assert pages == [Page("tracks", 1, items, 4, 1)]


# ---------------------------------------------------------------------------- building blocks


def test_build_session_configuration() -> None:
    settings = Settings(fetch_concurrency=7, max_retries=4, backoff_factor_s=0.5, max_backoff_s=3.0)
    with build_session(settings) as session:
        assert session.headers["User-Agent"] == USER_AGENT
        for prefix in ("http://", "https://"):
            adapter = session.get_adapter(prefix + "example.com")
            assert isinstance(adapter, requests.adapters.HTTPAdapter)
            assert adapter._pool_connections >= 7  # type: ignore[attr-defined]
            assert adapter._pool_maxsize >= 7  # type: ignore[attr-defined]
            retry = adapter.max_retries
            assert isinstance(retry, CappedRetry)
            assert (retry.total, retry.connect, retry.read, retry.status) == (4, 4, 4, 4)
            assert set(retry.status_forcelist) == {429, 500, 502, 503, 504}
            assert retry.allowed_methods == frozenset({"GET"})
            assert retry.backoff_factor == 0.5
            assert retry.backoff_max == 3.0
            assert retry.backoff_jitter > 0
            assert retry.respect_retry_after_header
            assert not retry.raise_on_status


def test_capped_retry_parses_and_caps_retry_after() -> None:
    retry = CappedRetry(total=3, backoff_max=2.5)
    assert retry.parse_retry_after("1") == 1
    assert retry.parse_retry_after("3600") == 2.5
    assert retry.parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT") == 2.5
    assert retry.parse_retry_after("not a date") == 0
    # urllib3 makes a new Retry per attempt: the cap must survive it.
    following = retry.increment(method="GET", url="/users")
    assert isinstance(following, CappedRetry)
    assert following.parse_retry_after("3600") == 2.5
    assert isinstance(following, Retry)


def test_source_error_carries_url_and_status() -> None:
    error = SourceError("HTTP 503", "http://api/users?page=1&size=100", 503)
    assert isinstance(error, RuntimeError)
    assert (error.url, error.status) == ("http://api/users?page=1&size=100", 503)
    assert "http://api/users?page=1&size=100" in str(error)
    assert "503" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.url, copy.status) == (str(error), error.url, error.status)
    assert SourceError("boom", "http://api/users").status is None


# ----------------------------------------------------------- bounded time, bounded memory


def test_a_dripping_body_fails_within_the_total_deadline() -> None:
    # a server of its own: the drip outlives the test by a fraction of a second, and must not
    # show up in the shared server's request log of the next test
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    body = json.dumps(FakeApi(5).envelope(1, 10)).encode()
    sent: list[int] = []
    stop = threading.Event()

    def drip() -> Iterator[bytes]:  # headers at once, then one byte every 0.3 s
        for index in range(len(body)):
            if stop.is_set():  # the test is over: do not leak into the next one
                return
            sent.append(index)
            yield body[index : index + 1]
            time.sleep(0.3)

    calls: list[str] = []

    def handler(request: Request) -> Response:
        calls.append(request.url)
        return Response(drip(), 200, content_type="application/json")

    serve(server, handler)
    settings = make_settings(server, request_deadline_s=1.0, request_timeout_s=1.0)

    try:
        with pytest.raises(SourceError, match=r"not complete within PIPELINE_REQUEST_DEADLINE_S"):
            fetch_all(settings)
    finally:
        stop.set()
        server.stop()

    # every read returned in time (0.3 s < the 1 s read timeout): only the total deadline ends
    # it, within one read timeout past it, long before the body's ~30 s
    assert len(sent) <= (1.0 + 1.0) / 0.3 + 2
    assert len(calls) == 1, calls  # not retried


def test_a_server_dripping_its_headers_fails_within_the_total_deadline() -> None:
    """urllib3's timeouts apply per socket read: a status line and headers sent one byte at a
    time (each well inside the read timeout) are bounded only by the request's total deadline
    (`chalicelib.ingest.request_deadline`'s watchdog)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()
    accepted: list[int] = []
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Drip: " + b"a" * 400

    def serve() -> None:  # one byte every 0.2 s, for at most 80 s: never the end of the headers
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            with connection:
                connection.recv(65536)  # the request
                for byte in head:
                    if stop.is_set():
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:  # the client gave up: the next connection, if any
                        break
                    time.sleep(0.2)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    settings = Settings(
        api_url=f"http://127.0.0.1:{port}",
        page_size=10,
        request_deadline_s=1.0,
        request_timeout_s=1.0,
        max_retries=2,
        backoff_factor_s=0,
        max_backoff_s=0.05,
    )
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match=r"status line and headers were not complete"):
            fetch_all(settings)
    finally:
        stop.set()
        server.join(timeout=5)
        listener.close()
    # a generous bound against the configured deadline (the drip alone lasts 80 s); a retry
    # urllib3 makes after the cut fails at once, so there is one connection only
    assert time.monotonic() - started < 1.0 + 10
    assert len(accepted) == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_a_response_over_the_size_cap_is_refused(httpserver: HTTPServer, chunked: bool) -> None:
    envelope = FakeApi(5).envelope(1, 10)
    envelope["padding"] = "x" * 300_000
    body = json.dumps(envelope).encode()
    streamed: list[int] = []

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            streamed.append(start)
            yield body[start : start + 4096]

    serve(
        httpserver,
        lambda request: Response(
            chunks() if chunked else body, 200, content_type="application/json"
        ),
    )
    settings = make_settings(httpserver, max_response_bytes=100_000)

    with pytest.raises(SourceError, match="larger than PIPELINE_MAX_RESPONSE_BYTES") as caught:
        fetch_all(settings)

    assert "page=1" in caught.value.url
    if chunked:  # read streamed: stopped at the cap, not at the end of the body
        assert "reading stopped there" in str(caught.value)
    else:  # Content-Length says it all: nothing read
        assert "nothing of it was read" in str(caught.value)


def test_json_nested_too_deeply_fails_the_page_by_url(httpserver: HTTPServer) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    body = b'{"items": [' + nested + b'], "total": 1, "page": 1, "size": 10, "pages": 1}'
    serve(httpserver, lambda request: Response(body, 200, content_type="application/json"))

    with pytest.raises(SourceError, match="nested too deeply") as caught:
        fetch_all(make_settings(httpserver))

    assert caught.value.url.endswith("/users?page=1&size=10")


# ---------------------------------------------------------- completeness against the source


def scripted_pages(pages: dict[int, dict[str, Any]]) -> Handler:
    return lambda request: json_response(pages[int(request.args["page"])])


def envelope(page: int, items: list[Any], total: int, size: int = 10) -> dict[str, Any]:
    return {"items": items, "total": total, "page": page, "size": size, "pages": -(-total // size)}


def rows(start: int, stop: int) -> list[dict[str, int]]:
    return [{"id": i} for i in range(start, stop)]


@pytest.mark.parametrize(
    ("pages", "problem"),
    [
        (  # the announced last page comes back empty
            {1: envelope(1, rows(0, 10), 25), 2: envelope(2, rows(10, 20), 25), 3: envelope(3, [], 25)},  # noqa: E501
            "page 3 of 3 holds 0 items, the announced total 25 implies 5",
        ),
        (  # an empty page before the last
            {1: envelope(1, rows(0, 10), 25), 2: envelope(2, [], 25), 3: envelope(3, rows(20, 25), 25)},  # noqa: E501
            "page 2 of 3 holds 0 items",
        ),
        (  # a short page in the middle
            {1: envelope(1, rows(0, 10), 25), 2: envelope(2, rows(10, 15), 25), 3: envelope(3, rows(20, 25), 25)},  # noqa: E501
            "page 2 of 3 holds 5 items, the announced total 25 implies 10",
        ),
        (  # more items than its size: the server ignores size
            {1: envelope(1, rows(0, 25), 25)},
            "page 1 holds 25 items, more than its size 10",
        ),
        (  # another size than asked for
            {1: envelope(1, rows(0, 20), 25, size=20)},
            "asked for size 10 but the API answered size 20",
        ),
        (  # rows deleted at the front while paging: total drops
            {1: envelope(1, rows(0, 10), 25), 2: envelope(2, rows(15, 25), 20)},
            "page 1 announced total 25 / pages 3, page 2 announces total 20 / pages 2",
        ),
        (  # consecutive pages sharing rows
            {1: envelope(1, rows(0, 10), 25), 2: envelope(2, rows(5, 15), 25), 3: envelope(3, rows(20, 25), 25)},  # noqa: E501
            "page 2 serves 5 item(s) that page 1 served too",
        ),
        (  # the same page again
            {1: envelope(1, rows(0, 10), 30), 2: envelope(2, rows(10, 20), 30), 3: envelope(3, rows(0, 10), 30)},  # noqa: E501
            "page 3 serves exactly the items of page 1",
        ),
    ],
)  # fmt: skip
def test_pages_that_disagree_with_what_the_api_announced_fail(
    httpserver: HTTPServer, pages: dict[int, dict[str, Any]], problem: str
) -> None:
    serve(httpserver, scripted_pages(pages))

    with pytest.raises(SourceError) as caught:
        fetch_all(make_settings(httpserver, fetch_concurrency=1))

    assert problem in str(caught.value)
    assert "/users?page=" in caught.value.url
    assert not source_threads()


def test_page_one_read_again_at_the_end_must_read_the_same(httpserver: HTTPServer) -> None:
    reads = {"page 1": 0}

    def handler(request: Request) -> Response:
        page = int(request.args["page"])
        if page == 1:
            reads["page 1"] += 1
            if reads["page 1"] > 1:  # a row of page 1 was replaced meanwhile: same total
                return json_response(envelope(1, [*rows(0, 9), {"id": 99}], 20))
            return json_response(envelope(1, rows(0, 10), 20))
        return json_response(envelope(2, rows(10, 20), 20))

    serve(httpserver, handler)

    with pytest.raises(SourceError, match="page 1 read again after the last page differs"):
        fetch_all(make_settings(httpserver))


def test_a_range_checks_the_total_its_planner_read(httpserver: HTTPServer) -> None:
    serve(httpserver, FakeApi(40))
    settings = make_settings(httpserver)

    with build_session(settings) as session:
        pages = list(fetch_pages(session, settings, "users", 2, 3, expected_total=40))
        assert [page.number for page in pages] == [2, 3]
        with pytest.raises(SourceError, match="announced total 50 when the run planned"):
            list(fetch_pages(session, settings, "users", 2, 3, expected_total=50))
