"""Lambda entry points in plain functions: raw event in, Lambda response out.

`app.py` only adapts Chalice's event objects to these, so the local cloud and the tests call
exactly what Lambda calls, with the same event shapes. `log_metrics` writes the invocation's
metrics as EMF lines when the handler returns, also when it raises.
"""

from __future__ import annotations

from typing import Any

from chalicelib import wiring
from chalicelib.ingest import run_ingest
from chalicelib.load import process_batch
from chalicelib.metrics import metrics
from chalicelib.telemetry import logger


@metrics.log_metrics
def handle_schedule(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge scheduled event -> one ingestion run; returns the run summary."""
    logger.info(
        "scheduled run fired",
        extra={"step": "ingest", "event_id": event.get("id"), "time": event.get("time")},
    )
    result = run_ingest(wiring.ingest_dependencies())
    return result.as_dict()


@metrics.log_metrics
def handle_kinesis(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Kinesis batch -> sinks; returns `batchItemFailures` for Lambda to re-deliver."""
    outcome = process_batch(event["Records"], wiring.load_dependencies())
    return outcome.response()
