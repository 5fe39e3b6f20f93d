"""One warm process of a Lambda function: `python -m localcloud.triggers.function_process`.

`FunctionPool` (`function_pool.py`) starts it with the two pipe ends it reads and writes
(`multiprocessing.connection`) and sends its setup: `{"function", "log_path", "chaos"}`. The
process installs its botocore hooks (`function_aws_calls.py`), imports the app once (the cold
start), answers `("ready",)`, then runs one invocation at a time:

- parent -> process: `("invoke", event, context_spec, number)` or `("stop",)`;
- process -> parent, while an invocation runs: `("log", message, attributes)` (a record the
  progress display reads, as it happens) and `("invoke", function_name, payload)` (an async
  `lambda:Invoke` the function made, which the parent runs);
- process -> parent, at its end: `("result", ok, value_or_error, emf_lines, aws_calls,
  chaos_counts)`.

Chaos faults that act on AWS clients or the load handler are installed here
(`localcloud.chaos`), where the function's clients live; its EMF lines are collected and sent
back with the answer; its log goes to `lambda.log`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from localcloud.triggers.function_aws_calls import AwsCallHooks

FORWARDED_LOGS = ("page published", "batch loaded")
"""Log messages whose records the parent's progress display reads."""
FORWARDED_ATTRIBUTES = ("entity", "items", "total", "counts", "step")


class FunctionProcess:
    """The function's side: imports the app once, then runs one invocation at a time."""

    def __init__(self, receive: Connection, send: Connection) -> None:
        self.receive = receive
        self.send_connection = send
        self._send_lock = threading.Lock()
        self.aws_calls = AwsCallHooks(lambda name, payload: self.send(("invoke", name, payload)))
        self.emf_lines: list[str] = []

    def send(self, message: Any) -> None:
        with self._send_lock:
            self.send_connection.send(message)

    def run(self) -> None:
        setup = self.receive.recv()
        self.aws_calls.install()
        function = setup["function"]
        os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", function)
        self._route_logs(Path(setup["log_path"]))  # before the init's own logs
        import app  # the cold start: the app's code, then its init (clients, connection)
        from chalicelib.observability.metrics import metrics

        metrics.output = self.emf_lines.append
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
        self.aws_calls.clear()
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
        calls = self.aws_calls.counts()
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

    def __init__(self, child: FunctionProcess) -> None:
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
    FunctionProcess(receive, send).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
