"""The part of Lambda that moto does not run for asynchronous invocations.

`AsyncInvoker` plays Lambda's asynchronous invocation of the ingest function: an invocation
that raises is retried (twice, as AWS does by default) with the same event, and an invocation
that calls `lambda:Invoke` on itself (the ingest continuing before its timeout) is captured and
run next, again with the same event.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from botocore.awsrequest import AWSResponse, HTTPHeaders

from localcloud.triggers.lambda_runtime import Handler, LambdaContext

log = logging.getLogger(__name__)


ContextFactory = Callable[[int], Any]
"""Builds the Lambda context of the n-th invocation (1-based)."""


@dataclass
class InvocationRecord:
    number: int
    result: dict[str, Any] | None = None
    error: str | None = None
    retry_of: int | None = None


@dataclass
class AsyncInvoker:
    """Lambda's async invocation of one function: retries on error, captured self-invokes."""

    handler: Handler
    lambda_client: Any
    function_name: str = "ingest"
    region: str = "us-east-1"
    maximum_retry_attempts: int = 2
    max_invocations: int = 100
    """A guard against a function that keeps re-invoking itself."""
    context_factory: ContextFactory | None = None
    invocations: list[InvocationRecord] = field(default_factory=list)
    _queued: deque[dict[str, Any]] = field(default_factory=deque)

    @property
    def function_arn(self) -> str:
        return LambdaContext(self.function_name, region=self.region).invoked_function_arn

    def run(self, event: dict[str, Any]) -> InvocationRecord:
        """Invoke with `event`, then every invocation it asks for; the last one's record."""
        events = self.lambda_client.meta.events
        events.register_first("before-call.lambda.Invoke", self._capture_invoke)
        try:
            self._queued.append(event)
            last = InvocationRecord(0, error="never invoked")
            while self._queued and len(self.invocations) < self.max_invocations:
                last = self._invoke_with_retries(self._queued.popleft())
            if self._queued:
                last = InvocationRecord(
                    len(self.invocations),
                    error=f"stopped after {self.max_invocations} invocations",
                )
            return last
        finally:
            events.unregister("before-call.lambda.Invoke", self._capture_invoke)

    def enqueue(self, event: dict[str, Any]) -> None:
        """An async invocation of this function made elsewhere (a function process's
        captured `Invoke`): it runs after the current one, like a captured self-invoke."""
        self._queued.append(event)

    def _invoke_with_retries(self, event: dict[str, Any]) -> InvocationRecord:
        first: int | None = None
        record = InvocationRecord(0)
        for _attempt in range(self.maximum_retry_attempts + 1):
            number = len(self.invocations) + 1
            record = InvocationRecord(number, retry_of=first)
            self.invocations.append(record)
            context = (
                self.context_factory(number)
                if self.context_factory is not None
                else LambdaContext(self.function_name, region=self.region)
            )
            try:
                record.result = self.handler(event, context)
                return record
            except Exception as error:
                record.error = f"{type(error).__name__}: {error}"
                log.info("async invocation %d failed: %s", number, record.error)
                first = first or number
        return record

    def _capture_invoke(
        self, params: dict[str, Any], **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        """Queue an async `Invoke` of this function instead of sending it (moto cannot run
        our function); an `Invoke` of another function is left to the next handler."""
        path = str(params.get("url_path", ""))
        target = unquote(path.split("/functions/", 1)[-1].split("/", 1)[0])
        if target and target.rsplit(":function:", 1)[-1].split(":", 1)[0] != self.function_name:
            return None
        body = params.get("body") or b"{}"
        self._queued.append(orjson.loads(body))
        response = AWSResponse(params.get("url", ""), 202, HTTPHeaders(), None)
        return response, {"StatusCode": 202, "ResponseMetadata": {"HTTPStatusCode": 202}}
