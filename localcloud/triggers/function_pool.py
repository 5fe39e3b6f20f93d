"""Each Lambda function's invocations in warm worker processes, as Lambda runs them.

Lambda runs every concurrent execution of a function in its own execution environment (a
process that stays warm between invocations), so the ingest, the per-shard loads and the
fan-out workers never share an interpreter. `FunctionPool` does the same for the local cloud:
a caller (a trigger of `localcloud.triggers.kinesis` / `localcloud.triggers.sqs`, or the
async invoker) calls the pool like a handler; the pool hands the event to an idle
`FunctionHost` (a child process running `python -m localcloud.triggers.function_process`,
started on demand, so there are as many processes as concurrent executions) and returns its
answer or raises its error.

What Lambda's machinery does around a function is done where it belongs:

- in the function's process (`function_process.py`, which describes the messages): its AWS
  calls are counted at the botocore boundary (every client the process creates, boto3's and
  PynamoDB's: `function_aws_calls.py`); an async `lambda:Invoke` it makes (the ingest
  continuing, the early verdict request) is captured, answered 202 and handed to the parent,
  which runs it as Lambda would; chaos faults that act on AWS clients or the load handler are
  installed there (`localcloud.chaos`), where the function's clients live; its EMF lines are
  collected and sent back with the answer; its log goes to `lambda.log` and the records the
  progress display needs ("page published", "batch loaded") are forwarded as they happen;
- in the parent: the triggers, the EMF bridge and the Lambda service metrics
  (`LocalMonitoring.instrument` wraps the pool like any handler).

Written by hand because no library runs a Lambda handler in a warm subprocess with botocore
hooks and streamed logs; the transport is `multiprocessing.connection` over two pipes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess  # starts this interpreter on our own module  # nosec B404
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


class FunctionError(Exception):
    """The function raised (or its process died): Lambda reports an error to the trigger."""


@dataclass
class ChaosConfig:
    """What a function process needs to build its own share of a chaos run's faults."""

    probabilities: dict[str, float]
    seed: int
    postgres_dsn: str | None = None


@dataclass
class HostConfig:
    function: str
    """The Chalice name of the function: ingest, load, ingest_worker or reconcile."""
    environment: dict[str, str]
    log_path: Path
    output_path: Path
    """Where the process's own stdout and stderr go (a crash's traceback)."""
    chaos: ChaosConfig | None = None


class FunctionHost:
    """One warm process of one function (one concurrent execution)."""

    def __init__(self, config: HostConfig, pool: FunctionPool, index: int) -> None:
        self.config = config
        self.pool = pool
        self.index = index
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        environment = dict(config.environment)
        environment["PYTHONUNBUFFERED"] = "1"
        config.output_path.parent.mkdir(parents=True, exist_ok=True)
        with config.output_path.open("ab") as output:
            command = [sys.executable, "-m", "localcloud.triggers.function_process"]
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, our module  # nosec B603
                [*command, str(child_read), str(child_write)],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                pass_fds=(child_read, child_write),
                cwd=Path(__file__).resolve().parents[2],
            )
        os.close(child_read)
        os.close(child_write)
        self.receive = Connection(parent_read, writable=False)
        self.send = Connection(parent_write, readable=False)
        chaos = config.chaos
        self.send.send(
            {
                "function": config.function,
                "log_path": str(config.log_path),
                "chaos": None
                if chaos is None
                else {
                    "probabilities": chaos.probabilities,
                    "seed": chaos.seed * 1000 + index,
                    "postgres_dsn": chaos.postgres_dsn,
                },
            }
        )
        self._ready = False
        self.chaos_counts: dict[str, int] = {}

    def _wait_ready(self) -> None:
        if not self._ready:
            message = self._recv()
            if message[0] != "ready":
                raise FunctionError(f"{self.config.function} process did not start: {message}")
            self._ready = True

    def _recv(self) -> Any:
        try:
            return self.receive.recv()
        except (EOFError, OSError) as error:
            code = self.process.poll()
            raise FunctionError(
                f"the {self.config.function} function's process exited "
                f"(code {code}; see {self.config.output_path})"
            ) from error

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def invoke(self, event: dict[str, Any], context: Any, number: int) -> Any:
        self._wait_ready()
        self.send.send(("invoke", event, _context_spec(context), number))
        while True:
            message = self._recv()
            kind = message[0]
            if kind == "log":
                self.pool.forward_log(message[1], message[2])
            elif kind == "invoke":
                self.pool.forward_invoke(message[1], message[2])
            elif kind == "result":
                _, ok, value, emf_lines, calls, chaos_counts = message
                self.pool.account(emf_lines, calls)
                self.chaos_counts = chaos_counts
                if not ok:
                    raise FunctionError(value)
                return value

    def stop(self, *, kill: bool = False) -> None:
        """Ask the process to end after its invocation (or end it now: `kill`)."""
        if kill:
            self.process.kill()
        with contextlib.suppress(OSError):
            self.send.send(("stop",))
        with contextlib.suppress(OSError):
            self.send.close()

    def close(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.receive.close()


def _context_spec(context: Any) -> dict[str, Any]:
    return {
        "function_name": getattr(context, "function_name", "function"),
        "memory_limit_in_mb": int(getattr(context, "memory_limit_in_mb", 512)),
        "timeout_s": float(getattr(context, "timeout_s", 900.0)),
        "region": getattr(context, "region", os.environ.get("AWS_REGION", "us-east-1")),
        "remaining_ms": int(context.get_remaining_time_in_millis())
        if hasattr(context, "get_remaining_time_in_millis")
        else None,
    }


@dataclass
class FunctionPool:
    """A function's warm processes: called like its handler, one process per concurrent call."""

    config: HostConfig
    on_log: Callable[[logging.LogRecord], object] | None = None
    """Receives the forwarded log records (the progress display)."""
    on_invoke: Callable[[str, bytes], None] | None = None
    """Receives each async `Invoke` the function made: (function name, payload)."""
    emf_output: Callable[[str], None] | None = None
    """Receives the function's EMF lines (the monitoring's bridge)."""
    aws_calls: Counter[str] = field(default_factory=Counter)
    """AWS API calls the function made, per `service.Operation`, since the pool started."""
    invocations: int = 0
    _idle: list[FunctionHost] = field(default_factory=list)
    _all: list[FunctionHost] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False
    """Closed pools start no process: a driver's thread still calling (Lambda's retry of an
    invocation whose process `close` killed) would leave one running after the command."""

    def warm(self, count: int) -> None:
        """Start `count` processes now (their imports run while the caller does other work)."""
        with self._lock:
            while len(self._all) < count and not self._closed:
                host = FunctionHost(self.config, self, len(self._all))
                self._all.append(host)
                self._idle.append(host)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            if self._closed:
                raise FunctionError(f"the {self.config.function} function is stopped")
            self.invocations += 1
            number = self.invocations
            host = self._idle.pop() if self._idle else None
            if host is None:
                host = FunctionHost(self.config, self, len(self._all))
                self._all.append(host)
        try:
            return host.invoke(event, context, number)
        finally:
            with self._lock:
                if host.alive:
                    self._idle.append(host)
                else:  # a dead execution environment is replaced by a new one on demand
                    self._all.remove(host)
                    host.close()

    def forward_log(self, message: str, attributes: dict[str, Any]) -> None:
        if self.on_log is not None:
            self.on_log(logging.makeLogRecord({"msg": message, "levelno": 20, **attributes}))

    def forward_invoke(self, function_name: str, payload: bytes) -> None:
        if self.on_invoke is None:
            raise FunctionError(f"nothing runs async invocations of {function_name}")
        self.on_invoke(function_name, payload)

    def account(self, emf_lines: list[str], calls: dict[str, int]) -> None:
        if self.emf_output is not None:
            for line in emf_lines:
                self.emf_output(line)
        with self._lock:
            self.aws_calls.update(calls)

    def total_calls(self) -> int:
        with self._lock:
            return sum(self.aws_calls.values())

    def chaos_counts(self) -> Counter[str]:
        """Faults injected by this function's processes (each process counts its own)."""
        total: Counter[str] = Counter()
        with self._lock:
            for host in self._all:
                total.update(host.chaos_counts)
        return total

    @property
    def processes(self) -> int:
        return len(self._all)

    def close(self, *, kill: bool = False) -> None:
        """End every process: after its current invocation, or at once (`kill`)."""
        with self._lock:
            self._closed = True
            hosts, self._all, self._idle = self._all, [], []
        for host in hosts:
            host.stop(kill=kill)  # all of them first: they end in parallel
        for host in hosts:
            host.close(kill=kill)
