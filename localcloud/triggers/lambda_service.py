"""The Lambda service of the local cloud: where each function's invocations run, and its
asynchronous invocations.

With `processes` (what `localcloud run` and `up` use), every function runs in warm worker
processes of its own (`localcloud.triggers.function_pool`: one per concurrent execution, as Lambda
keeps one execution environment per concurrent invocation), and its AWS calls are counted
there, at the botocore boundary. Without, the handlers run as threads of this process: kept for
tests that hook the functions' AWS clients from the test process; that mode counts no AWS calls
(its `aws_calls` is empty), runs a verdict request only once the drivers are done (the
handlers share one process-wide metrics buffer there, which Lambda never does, so a reconcile
running beside a load would flush the load's metrics as its own) and is never what the command
runs.

An async `lambda:Invoke` a function makes goes to `invoke_async`, which routes it by function
name as Lambda would: the ingest's continuations to the ingest's `AsyncInvoker` (the run's
invocation chain), a verdict request (`chalicelib.reconcile.verdict_request`) to the reconcile
function,
run at once on a thread of its own with Lambda's two retries of an async invocation. Each
reconcile invocation's start, end and answer is kept for the run's timings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from localcloud.chaos import Chaos
from localcloud.triggers.function_pool import ChaosConfig, FunctionPool, HostConfig
from localcloud.triggers.lambda_runtime import Handler, LambdaContext

FUNCTIONS = ("ingest", "load", "ingest_worker", "reconcile")
ASYNC_RETRIES = 2
log = logging.getLogger(__name__)


@dataclass
class ReconcileInvocation:
    """One invocation of the reconcile function, as the cloud ran it."""

    trigger: str
    """"request" (a verdict request of the pipeline) or "schedule"."""
    started: float
    ended: float | None = None
    answer: dict[str, Any] | None = None
    error: str | None = None

    @property
    def duration_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started


class LambdaService:
    """Runs the deployed functions for one local cloud."""

    def __init__(
        self,
        *,
        processes: bool,
        state_dir: Path,
        names: dict[str, str],
        contexts: dict[str, Callable[[], LambdaContext]],
        instrument: Callable[[str, Handler], Handler],
        emf_output: Callable[[str], None] | None,
        environments: dict[str, dict[str, str]],
        chaos: Chaos | None = None,
    ) -> None:
        self.processes = processes
        self.state_dir = state_dir
        self.names = names
        """{Chalice function name: deployed function name}."""
        self.contexts = contexts
        self.instrument = instrument
        self.chaos = chaos
        self.pools: dict[str, FunctionPool] = {}
        self._handlers: dict[str, Handler] = {}
        self.on_log: Callable[[logging.LogRecord], object] | None = None
        self.ingest_queue: Callable[[dict[str, Any]], None] | None = None
        """Where the ingest's own async invocations (continuations) go: the run's invoker."""
        self.reconciles: list[ReconcileInvocation] = []
        self._threads: list[threading.Thread] = []
        self._deferred: list[dict[str, Any]] = []
        """Verdict requests of the in-process mode, run by `wait_reconciles`."""
        self._lock = threading.Lock()
        if processes:
            for function in FUNCTIONS:
                self.pools[function] = FunctionPool(
                    HostConfig(
                        function=function,
                        environment=environments[function],
                        log_path=state_dir / "lambda.log",
                        output_path=state_dir / "functions" / f"{function}.log",
                        chaos=self._chaos_config(),
                    ),
                    on_log=self._forward_log,
                    on_invoke=self.invoke_async,
                    emf_output=emf_output,
                )

    def _chaos_config(self) -> ChaosConfig | None:
        if self.chaos is None:
            return None
        return ChaosConfig(
            probabilities={
                name: fault.probability
                for name, fault in self.chaos.faults.items()
                if name not in self._api_faults()
            },
            seed=self.chaos.seed,
            postgres_dsn=self.chaos.postgres_dsn,
        )

    @staticmethod
    def _api_faults() -> set[str]:
        from localcloud.chaos import FAULTS, ApiFault

        return {name for name, fault in FAULTS.items() if issubclass(fault, ApiFault)}

    def _forward_log(self, record: logging.LogRecord) -> None:
        if self.on_log is not None:
            self.on_log(record)

    def warm(self, concurrency: dict[str, int]) -> None:
        """Start the processes a run will use while the caller does other work."""
        for function, count in concurrency.items():
            if function in self.pools:
                self.pools[function].warm(count)

    def handler(
        self, function: str, in_process: Handler | None = None, *, chaos: bool = True
    ) -> Handler:
        """The function as its triggers call it, instrumented as Lambda sees it.

        In-process: `in_process` itself (what the caller built, chaos or not). With
        processes: the function's pool; `chaos=False` a pool of its own without the chaos
        run's faults (the redrive after a chaos run)."""
        if not self.processes:
            assert in_process is not None
            return self.instrument(function, in_process)
        key = function if chaos or self.chaos is None else f"{function}:clean"
        if key not in self.pools:
            clean = self.pools[function].config
            self.pools[key] = FunctionPool(
                HostConfig(
                    function=function,
                    environment=clean.environment,
                    log_path=clean.log_path,
                    output_path=clean.output_path,
                ),
                on_log=self._forward_log,
                on_invoke=self.invoke_async,
                emf_output=self.pools[function].emf_output,
            )
        if key not in self._handlers:
            self._handlers[key] = self.instrument(function, self.pools[key])
        return self._handlers[key]

    # -- async invocations -------------------------------------------------------------------

    def invoke_async(self, function_name: str, payload: bytes) -> None:
        """An `Invoke` with InvocationType Event, routed to the function it names."""
        name = function_name.rsplit(":function:", 1)[-1].split(":", 1)[0]
        event = orjson.loads(payload or b"{}")
        if name == self.names.get("ingest") and self.ingest_queue is not None:
            self.ingest_queue(event)
        elif name == self.names.get("reconcile"):
            if self.processes:
                self.start_reconcile(event, "request")
            else:
                with self._lock:
                    self._deferred.append(event)
        else:
            raise ValueError(f"the local cloud runs no async invocation of {function_name}")

    def capture_invoke(self, params: dict[str, Any], **_: Any) -> Any:
        """botocore `before-call.lambda.Invoke` hook of this process's client (in-process
        mode): the functions' async invocations, run here instead of sent to moto."""
        from urllib.parse import unquote

        from botocore.awsrequest import AWSResponse, HTTPHeaders

        path = str(params.get("url_path", ""))
        name = unquote(path.split("/functions/", 1)[-1].split("/", 1)[0])
        body = params.get("body") or b"{}"
        self.invoke_async(name, body if isinstance(body, bytes) else str(body).encode())
        response = AWSResponse(params.get("url", ""), 202, HTTPHeaders(), None)
        return response, {"StatusCode": 202, "ResponseMetadata": {"HTTPStatusCode": 202}}

    def start_reconcile(self, event: dict[str, Any], trigger: str) -> ReconcileInvocation:
        """Run the reconcile function with `event` on its own thread (async invocation)."""
        invocation = ReconcileInvocation(trigger, time.monotonic())
        with self._lock:
            self.reconciles.append(invocation)
        thread = threading.Thread(
            target=self._run_reconcile, args=(event, invocation), name="reconcile", daemon=True
        )
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return invocation

    def _run_reconcile(self, event: dict[str, Any], invocation: ReconcileInvocation) -> None:
        handler = self.handler("reconcile", self._in_process_reconcile())
        for attempt in range(ASYNC_RETRIES + 1):
            try:
                invocation.answer = handler(event, self.contexts["reconcile"]())
                invocation.error = None
                break
            except Exception as error:  # Lambda retries an async invocation twice
                invocation.error = f"{type(error).__name__}: {error}"
                log.info("reconcile attempt %d failed: %s", attempt + 1, invocation.error)
        invocation.ended = time.monotonic()

    def fire_reconcile(self, event: dict[str, Any]) -> ReconcileInvocation:
        """The reconcile schedule fires: run the function and wait for it."""
        invocation = self.start_reconcile(event, "schedule")
        self.wait_reconciles()
        return invocation

    def wait_reconciles(self) -> None:
        """Wait for every reconcile invocation (starting the deferred ones first)."""
        with self._lock:
            deferred, self._deferred = self._deferred, []
        for event in deferred:
            self.start_reconcile(event, "request")
        while True:
            with self._lock:
                pending = [thread for thread in self._threads if thread.is_alive()]
                self._threads = pending
            if not pending:
                return
            for thread in pending:
                thread.join()

    @staticmethod
    def _in_process_reconcile() -> Handler:
        import app

        return app.reconcile

    # -- accounting --------------------------------------------------------------------------

    def aws_calls(self) -> Counter[str]:
        """{function: AWS calls so far} (empty in in-process mode)."""
        calls: Counter[str] = Counter()
        for name, pool in self.pools.items():
            calls[name.split(":", 1)[0]] += pool.total_calls()
        return calls

    def chaos_counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for pool in self.pools.values():
            total.update(pool.chaos_counts())
        return total

    def close(self, *, interrupted: bool = False) -> None:
        """End the function processes; `interrupted`: at once, without waiting for a
        reconcile invocation still running."""
        if not interrupted:
            self.wait_reconciles()
        for pool in self.pools.values():
            pool.close(kill=interrupted)
