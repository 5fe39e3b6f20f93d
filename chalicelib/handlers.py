"""Lambda entry points in plain functions: raw event in, Lambda response out.

`app.py` only adapts Chalice's event objects to these, so the local cloud and the tests call
exactly what Lambda calls, with the same event shapes.
"""

from __future__ import annotations

from typing import Any

from chalicelib import wiring
from chalicelib.fanout import WorkItem
from chalicelib.ingest import run_ingest
from chalicelib.load import process_batch
from chalicelib.telemetry import logger
from chalicelib.worker import run_work_item


def handle_schedule(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge scheduled event -> one ingestion run; returns the run summary."""
    logger.info(
        "scheduled run fired",
        extra={"step": "ingest", "event_id": event.get("id"), "time": event.get("time")},
    )
    result = run_ingest(wiring.ingest_dependencies())
    return result.as_dict()


def handle_kinesis(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Kinesis batch -> sinks; returns `batchItemFailures` for Lambda to re-deliver."""
    outcome = process_batch(event["Records"], wiring.load_dependencies())
    return outcome.response()


def handle_work(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS batch of fan-out work items -> publish each page range; raises to be retried."""
    done = []
    for record in event["Records"]:
        item = WorkItem.from_json(record["body"])
        counts = run_work_item(wiring.ingest_dependencies(), item)
        done.append(
            {"resource": item.resource, "first_page": item.first_page, "fetched": counts.fetched}
        )
    return {"work_items": done}
