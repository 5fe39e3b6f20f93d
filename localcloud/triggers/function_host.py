"""Each Lambda function's invocations in warm worker processes, as Lambda runs them.

Lambda runs every concurrent execution of a function in its own execution environment (a
process that stays warm between invocations), so the ingest, the per-shard loads and the
fan-out workers never share an interpreter. `FunctionPool` does the same for the local cloud:
a caller (a trigger of `localcloud.triggers.kinesis` / `localcloud.triggers.sqs`, or the
async invoker) calls the pool like a handler; the pool hands the event to an idle
`FunctionHost` (a child process running `python -m localcloud.triggers.function_host`, started
on demand, so there are as many processes as concurrent executions) and returns its answer or
raises its error.

What Lambda's machinery does around a function is done where it belongs:

- in the function's process: its AWS calls are counted at the botocore boundary (every client
  the process creates, boto3's and PynamoDB's); an async `lambda:Invoke` it makes (the ingest
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
import signal
import subprocess  # starts this interpreter on our own module  # nosec B404
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import unquote

FORWARDED_LOGS = ("page published", "batch loaded")
"""Log messages whose records the parent's progress display reads."""
FORWARDED_ATTRIBUTES = ("entity", "items", "total", "counts", "step")
INVOKE_CALL = "before-call.lambda.Invoke"


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


# -- the parent's side -----------------------------------------------------------------------


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
            command = [sys.executable, "-m", "localcloud.triggers.function_host"]
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


# -- the function's process ------------------------------------------------------------------


class _Child:
    """The function's side: imports the app once, then runs one invocation at a time."""

    def __init__(self, receive: Connection, send: Connection) -> None:
        self.receive = receive
        self.send_connection = send
        self._send_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self.emf_lines: list[str] = []
        self.invoking = False

    def send(self, message: Any) -> None:
        with self._send_lock:
            self.send_connection.send(message)

    # botocore hooks on every client this process creates
    def count_call(self, model: Any, **_: Any) -> None:
        with self._calls_lock:
            self.calls[f"{model.service_model.endpoint_prefix}.{model.name}"] += 1

    def capture_invoke(self, params: dict[str, Any], **_: Any) -> Any:
        """An async `Invoke`: the parent runs it (moto cannot); Lambda answers 202 at once."""
        from botocore.awsrequest import AWSResponse, HTTPHeaders

        path = str(params.get("url_path", ""))
        name = unquote(path.split("/functions/", 1)[-1].split("/", 1)[0])
        body = params.get("body") or b"{}"
        self.send(("invoke", name, bytes(body) if not isinstance(body, str) else body.encode()))
        response = AWSResponse(params.get("url", ""), 202, HTTPHeaders(), None)
        return response, {"StatusCode": 202, "ResponseMetadata": {"HTTPStatusCode": 202}}

    def install_hooks(self) -> None:
        import botocore.session

        original = botocore.session.Session.create_client
        child = self

        def create_client(session: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            client.meta.events.register("before-parameter-build", child.count_call)
            if client.meta.service_model.service_name == "lambda":
                client.meta.events.register_first(INVOKE_CALL, child.capture_invoke)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign,assignment]

    def run(self) -> None:
        setup = self.receive.recv()
        self.install_hooks()
        function = setup["function"]
        os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", function)
        import app  # the cold start: the app and its clients' code
        from chalicelib.observability.metrics import metrics

        metrics.output = self.emf_lines.append
        self._route_logs(Path(setup["log_path"]))
        handler = getattr(app, function)
        chaos = self._chaos(setup.get("chaos"))
        if chaos is not None:
            handler = self._with_chaos(function, handler, chaos)
        self.send(("ready",))
        while True:
            try:
                message = self.receive.recv()
            except EOFError:
                return
            if message[0] == "stop":
                return
            _, event, spec, number = message
            self.send(self._invoke(handler, event, spec, number, function, chaos))

    def _invoke(
        self,
        handler: Any,
        event: dict[str, Any],
        spec: dict[str, Any],
        number: int,
        function: str,
        chaos: Any,
    ) -> tuple[Any, ...]:
        from localcloud.triggers.lambda_runtime import LambdaContext

        self.emf_lines.clear()
        with self._calls_lock:
            self.calls.clear()
        if chaos is not None and function == "ingest":
            context: Any = chaos.ingest_context_for(number, spec["function_name"], spec["region"])
        else:
            context = LambdaContext(
                spec["function_name"],
                memory_limit_in_mb=spec["memory_limit_in_mb"],
                timeout_s=spec["timeout_s"],
                region=spec["region"],
            )
            if spec.get("remaining_ms") is not None:
                context.timeout_s = spec["remaining_ms"] / 1000.0
        ok, value = True, None
        try:
            value = handler(event, context)
        except Exception as error:  # the function's error, as Lambda reports it
            ok, value = False, f"{type(error).__name__}: {error}"
            logging.getLogger(__name__).debug("invocation failed:\n%s", traceback.format_exc())
        with self._calls_lock:
            calls = dict(self.calls)
        counts = chaos.counts() if chaos is not None else {}
        return ("result", ok, value, list(self.emf_lines), calls, counts)

    def _route_logs(self, path: Path) -> None:
        from chalicelib.observability.logging import SERVICE

        pipeline_logger = logging.getLogger(SERVICE)
        formatter = pipeline_logger.handlers[0].formatter if pipeline_logger.handlers else None
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setFormatter(formatter or logging.Formatter())
        pipeline_logger.handlers = [file_handler, _Forwarder(self)]
        pipeline_logger.propagate = False

    @staticmethod
    def _chaos(setup: dict[str, Any] | None) -> Any:
        if setup is None:
            return None
        from localcloud.chaos import Chaos

        return Chaos(
            setup["probabilities"],
            seed=setup["seed"],
            fake_api=False,
            postgres_dsn=setup["postgres_dsn"],
        )

    @staticmethod
    def _with_chaos(function: str, handler: Any, chaos: Any) -> Any:
        """Hook the function's clients (boto3's and PynamoDB's) before each invocation."""
        from chalicelib import wiring
        from chalicelib.aws import clients as aws

        def clients() -> list[Any]:
            found = [aws.client("kinesis"), aws.client("dynamodb")]
            if function == "load":
                from chalicelib.load.sinks.dynamodb import ROW_MODELS

                wiring.load_dependencies()  # builds the sinks, hence PynamoDB's clients
                found += [m._get_connection().connection.client for m in ROW_MODELS.values()]
            return found

        if function == "load":
            return chaos.wrap_load(handler, lambda: chaos.attach(clients()))

        def hooked(event: dict[str, Any], context: Any) -> Any:
            chaos.attach(clients())
            return handler(event, context)

        return hooked


class _Forwarder(logging.Handler):
    """Sends the records the parent's progress display reads, as they happen."""

    def __init__(self, child: _Child) -> None:
        super().__init__(level=logging.INFO)
        self.child = child

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in FORWARDED_LOGS:
            return
        attributes = {
            name: getattr(record, name) for name in FORWARDED_ATTRIBUTES if hasattr(record, name)
        }
        with contextlib.suppress(OSError):
            self.child.send(("log", message, attributes))


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal reaches the whole process group: the parent ends its functions
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    receive = Connection(int(argv[0]), writable=False)
    send = Connection(int(argv[1]), readable=False)
    _Child(receive, send).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
