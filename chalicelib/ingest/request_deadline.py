"""A total deadline for one HTTP request, status line and headers included.

urllib3 bounds each socket operation (the connect, every read), never a whole request: a server
that drips its status line and headers one byte at a time keeps `session.get` waiting for as
long as it likes, and nothing in requests or urllib3 can bound that (the body is bounded by
reading it one socket read at a time in `chalicelib.ingest.source`). So a watchdog does it, written
by hand: the connection this thread sends its request on is remembered, and a timer shuts its
socket down at the deadline. The blocked read then ends at once, and the request fails with
`RequestDeadlineExceeded` (a retry urllib3 attempts after that fails the same way at once).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class RequestDeadlineExceeded(RuntimeError):
    """The request outlived its deadline; not an error urllib3 retries."""


class Watch:
    """One request's deadline: the connection it uses, and whether the deadline has passed."""

    def __init__(self) -> None:
        self.expired = False
        self.connection: HTTPConnection | None = None
        self._lock = threading.Lock()

    def attach(self, connection: HTTPConnection) -> None:
        with self._lock:
            if self.expired:
                raise RequestDeadlineExceeded("the request's deadline passed before it was sent")
            self.connection = connection

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing is waiting on it
                sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv: it returns at once


_local = threading.local()


def _attach(connection: HTTPConnection) -> None:
    watch: Watch | None = getattr(_local, "watch", None)
    if watch is not None:
        watch.attach(connection)


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedTLSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections can be cut by `request_deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedTLSPool}


@contextmanager
def request_deadline(seconds: float) -> Iterator[Watch]:
    """Within the block, a request this thread sends through a `DeadlineAdapter` is cut at
    `seconds`; `watch.expired` says whether that happened (check it after reading the body)."""
    watch = Watch()
    timer = threading.Timer(seconds, watch.expire)
    timer.daemon = True
    previous = getattr(_local, "watch", None)
    _local.watch = watch
    timer.start()
    try:
        yield watch
    finally:
        timer.cancel()
        _local.watch = previous
