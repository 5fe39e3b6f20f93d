"""The embedded services: a moto server for AWS, in its own process.

moto runs as a separate process (not a thread) so that the emulator and the pipeline use both
cores instead of sharing one interpreter lock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess  # nosec B404
import sys
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import requests


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_http(
    url: str, timeout_s: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll `url` until it answers; fail early if the process behind it died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url} did not start: its process exited with {process.returncode}")
        with contextlib.suppress(requests.RequestException):
            requests.get(url, timeout=1)
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.1)


class MotoServer:
    """A moto server process on a free loopback port; stops with the context."""

    def __init__(self, log_path: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def running(cls, url: str) -> MotoServer:
        """A moto server started by another process (`localcloud up`): never stopped here."""
        parsed = urlsplit(url)
        return cls(Path(os.devnull), host=parsed.hostname or "127.0.0.1", port=parsed.port or 80)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> MotoServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "false"}
        # localcloud.emulators.moto_server is imported from this project, whatever the working
        # directory
        project_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
        # our own interpreter with our own arguments, no shell (ruff S603, bandit B603)
        self._process = subprocess.Popen(  # noqa: S603  # nosec B603
            [
                sys.executable,
                "-m",
                "localcloud.emulators.moto_server",
                "-H",
                self.host,
                "-p",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        wait_for_http(f"{self.url}/moto-api/", process=self._process)
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
