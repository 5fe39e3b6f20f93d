"""A function process's AWS calls, seen at the botocore boundary as Lambda's machinery sees them.

Every client the process creates (boto3's and PynamoDB's) gets two hooks: each call is counted
per `service.Operation` (the run's `aws_calls`), and an async `lambda:Invoke` (the ingest
continuing, the early verdict request) is captured, answered 202 at once as Lambda answers it,
and handed on (`on_invoke`): moto cannot run it, the local cloud's process does.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

INVOKE_CALL = "before-call.lambda.Invoke"


class AwsCallHooks:
    """The botocore hooks of one function process, and the calls counted since `clear`."""

    def __init__(self, on_invoke: Callable[[str, bytes], None]) -> None:
        self.on_invoke = on_invoke
        """Receives each async `Invoke`: (function name, payload)."""
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()

    def count_call(self, model: Any, **_: Any) -> None:
        with self._calls_lock:
            self.calls[f"{model.service_model.endpoint_prefix}.{model.name}"] += 1

    def capture_invoke(self, params: dict[str, Any], **_: Any) -> Any:
        """An async `Invoke`: the parent runs it (moto cannot); Lambda answers 202 at once."""
        from botocore.awsrequest import AWSResponse, HTTPHeaders

        path = str(params.get("url_path", ""))
        name = unquote(path.split("/functions/", 1)[-1].split("/", 1)[0])
        body = params.get("body") or b"{}"
        self.on_invoke(name, bytes(body) if not isinstance(body, str) else body.encode())
        response = AWSResponse(params.get("url", ""), 202, HTTPHeaders(), None)
        return response, {"StatusCode": 202, "ResponseMetadata": {"HTTPStatusCode": 202}}

    def install(self) -> None:
        """Hook every client botocore creates from now on, boto3's and PynamoDB's alike."""
        import botocore.session

        original = botocore.session.Session.create_client
        hooks = self

        def create_client(session: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            client.meta.events.register("before-parameter-build", hooks.count_call)
            if client.meta.service_model.service_name == "lambda":
                client.meta.events.register_first(INVOKE_CALL, hooks.capture_invoke)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign,assignment]

    def clear(self) -> None:
        with self._calls_lock:
            self.calls.clear()

    def counts(self) -> dict[str, int]:
        """{`service.Operation`: calls} since `clear`."""
        with self._calls_lock:
            return dict(self.calls)
