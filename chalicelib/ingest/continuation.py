"""Continue a long ingestion in a fresh invocation before Lambda's timeout cuts it off.

The ingest stops cleanly `PIPELINE_INGEST_STOP_MARGIN_S` before its timeout, with its progress
checkpointed, and invokes itself asynchronously with the very same EventBridge event: the event
id leads the new invocation to the same run, which resumes after the checkpoints. Lambda's own
async retries (after a crash or a hard timeout) take the same path. The number of invocations
per run is bounded (`PIPELINE_INGEST_MAX_INVOCATIONS`), so a run that cannot progress fails
instead of looping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from chalicelib.aws import clients as aws
from chalicelib.observability.logging import logger


def continue_in_new_invocation(event: Mapping[str, Any], context: Any) -> bool:
    """Invoke this function again, asynchronously, with `event`; False when it cannot."""
    function_arn = getattr(context, "invoked_function_arn", None)
    if not function_arn:
        logger.error(
            "cannot continue the run: the context names no function",
            extra={"step": "ingest", "event_id": event.get("id")},
        )
        return False
    aws.client("lambda").invoke(
        FunctionName=function_arn, InvocationType="Event", Payload=orjson.dumps(dict(event))
    )
    logger.info(
        "run continues in a new invocation",
        extra={"step": "ingest", "event_id": event.get("id"), "function": function_arn},
    )
    return True
