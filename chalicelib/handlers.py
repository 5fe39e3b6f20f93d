"""Lambda entry points in plain functions: raw event in, Lambda response out.

`app.py` only adapts Chalice's event objects to these, so the local cloud and the tests call
exactly what Lambda calls, with the same event shapes.
"""

from __future__ import annotations

from typing import Any

from chalicelib import wiring
from chalicelib.continuation import continue_in_new_invocation
from chalicelib.ingest import run_ingest
from chalicelib.load import process_batch
from chalicelib.progress import Deadline, run_id_for_event
from chalicelib.settings import get_settings
from chalicelib.telemetry import logger


def handle_schedule(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge scheduled event -> one ingestion run; returns the run summary.

    Every delivery of one event (Lambda's async retries, the run's own continuations) works on
    the same run, resuming after its checkpoints.
    """
    logger.info(
        "scheduled run fired",
        extra={"step": "ingest", "event_id": event.get("id"), "time": event.get("time")},
    )
    deadline = Deadline(context, get_settings().ingest_stop_margin_s)
    result = run_ingest(
        wiring.ingest_dependencies(), run_id=run_id_for_event(event), deadline=deadline
    )
    if result.continuing:
        continue_in_new_invocation(event, context)
    return result.as_dict()


def handle_reconcile(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled: settle every run whose stream records should all be loaded by now."""
    settings = get_settings()
    results = wiring.reconciler(settings).reconcile_pending(settings.reconcile_grace_s)
    return {"runs": {result.run_id: result.status for result in results}}


def handle_kinesis(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Kinesis batch -> sinks; returns `batchItemFailures` for Lambda to re-deliver."""
    outcome = process_batch(event["Records"], wiring.load_dependencies())
    return outcome.response()
