"""`invoke`: run a deployed function once and read its answer, as `make invoke-local` does."""

from __future__ import annotations

import base64
import json
from typing import Any

from chalicelib.aws import clients as aws
from infra.deploy.target import SCHEDULED_FUNCTION, check_target, spec_for
from infra.stages import Stage


def invoke(stage: Stage, function: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Invoke a deployed function synchronously; returns its answer and the log tail.

    `payload` is the function's JSON answer, or None with the answer as text in `raw_payload`
    when it is not JSON (an emulator that cannot run functions answers with its own error text).
    `function_error` is Lambda's `FunctionError` (`Unhandled`, `Handled`) when the call failed.
    """
    check_target(stage)
    response = aws.client("lambda").invoke(
        FunctionName=spec_for(stage).function_name(function),
        Payload=json.dumps(payload).encode(),
        LogType="Tail",
    )
    raw = response["Payload"].read().decode(errors="replace")
    answer: dict[str, Any] = {
        "status": response.get("StatusCode"),
        "function_error": response.get("FunctionError"),
        "payload": None,
        "log_tail": base64.b64decode(response.get("LogResult", "")).decode(errors="replace"),
    }
    try:
        answer["payload"] = json.loads(raw) if raw else None
    except ValueError:
        answer["raw_payload"] = raw
    return answer


def invoke_failure(function: str, answer: dict[str, Any]) -> str | None:
    """What went wrong with an invocation, in one message; None when it succeeded."""
    raw = answer.get("raw_payload")
    error = answer.get("function_error")
    if error is None and raw is None:
        return None
    if isinstance(answer.get("payload"), dict) and "errorMessage" in answer["payload"]:
        body = answer["payload"]
        what = f"{body.get('errorType', 'Error')}: {body['errorMessage']}"
    elif raw is not None:
        what = f"the answer is not JSON: {raw[:2000]}"
    else:
        what = json.dumps(answer.get("payload"))[:2000]
    message = f"{function} failed (FunctionError: {error or 'none'}): {what}"
    if raw is not None:
        message += (
            "\nThe endpoint answered with text instead of the function's JSON: an emulator "
            "that records functions but cannot run them (a moto server without Docker) "
            "answers this way; LocalStack runs them."
        )
    return message


def scheduled_event_payload(stage: Stage) -> dict[str, Any]:
    """What the schedule rule sends, so a manual ingest run looks like a scheduled one."""
    return {
        "version": "0",
        "id": "manual-invocation",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "resources": [stage.rule_name(SCHEDULED_FUNCTION)],
        "detail": {},
    }
