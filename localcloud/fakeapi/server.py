"""The fake API served by uvicorn in a daemon thread, for the tests and the local cloud."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from types import TracebackType

import uvicorn

from localcloud.fakeapi.app import build_app
from localcloud.fakeapi.faults import FaultInjector
from localcloud.fakeapi.source_faults import SourceFaults


class FakeApiServer:
    """Serve `build_app(...)` with uvicorn in a daemon thread; a context manager.

    The socket is bound before the thread starts, so `port=0` picks a free port with no race,
    and `url` is known as soon as `start()` returns.
    """

    def __init__(
        self,
        records: int = 1000,
        seed: int = 0,
        faults: FaultInjector | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        source_faults: SourceFaults | None = None,
    ) -> None:
        self.records = records
        self.seed = seed
        self.faults = faults
        self.source_faults = source_faults
        self.host = host
        self.port = port
        self.app = build_app(records=records, seed=seed, faults=faults, source_faults=source_faults)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321`; valid once started."""
        if self._server is None:
            raise RuntimeError("FakeApiServer is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeApiServer:
        """Bind, serve in a daemon thread, and return once the API answers."""
        if self._server is not None:
            raise RuntimeError("FakeApiServer is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP, or asyncio skips TCP_NODELAY on accepted connections, and every
        # keep-alive request then waits ~40 ms for a delayed ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fakeapi:{self.port}", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        try:
            self._wait_until_answering(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_answering(self, timeout: float) -> None:
        assert self._server is not None
        assert self._thread is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError("the fake API server thread died while starting")
            if self._server.started:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=2)
                try:
                    connection.request("GET", "/openapi.json")
                    if connection.getresponse().status == 200:
                        return
                except OSError:
                    pass
                finally:
                    connection.close()
            time.sleep(0.01)
        raise TimeoutError(f"the fake API did not answer on {self.url} within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit, wait for the thread; idempotent."""
        server, thread, sock = self._server, self._thread, self._socket
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        if sock is not None:
            sock.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
