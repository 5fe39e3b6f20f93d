"""Lambda entry points in plain functions: raw event in, Lambda response out.

`app.py` only adapts Chalice's event objects to these, so the local cloud and the tests call
exactly what Lambda calls, with the same event shapes. `log_metrics` writes the invocation's
metrics as EMF lines when the handler returns, also when it raises.
"""

from __future__ import annotations

from typing import Any

from chalicelib import wiring
from chalicelib.ingest.continuation import continue_in_new_invocation
from chalicelib.ingest.fanout import WorkItem
from chalicelib.ingest.run import run_ingest
from chalicelib.ingest.worker import run_work_item
from chalicelib.load.consumer import process_batch
from chalicelib.observability.logging import logger
from chalicelib.observability.metrics import metrics
from chalicelib.reconcile.verdict import SETTLED, STOP_MARGIN_S
from chalicelib.reconcile.verdict_request import handled_per_run, requested_run
from chalicelib.runs.ledger import Deadline, run_id_for_event
from chalicelib.settings import get_settings


@metrics.log_metrics
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
    dependencies = wiring.ingest_dependencies()
    try:
        result = run_ingest(dependencies, run_id=run_id_for_event(event), deadline=deadline)
    finally:
        dependencies.publisher.close()
    if result.continuing:
        continue_in_new_invocation(event, context)
    else:
        wiring.verdict_requests(get_settings(), context).after_ingest(result.run_id)
    return result.as_dict()


@metrics.log_metrics
def handle_reconcile(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled: settle every run whose stream records should all be loaded by now; write the
    run-outcome metrics, the last success and DatasetUpdated of each run settled
    (`chalicelib.runs.outcome`). A `RunLoaded` event
    (`chalicelib.reconcile.verdict_request`) settles its one run if it balances;
    a run that does not yet is left to the schedule (never final).
    Short of time, the function invokes itself with the same event and resumes there."""
    settings = get_settings()
    reconciler = wiring.reconciler(settings)
    deadline = Deadline(context, STOP_MARGIN_S)
    run_id = requested_run(event)
    if run_id is not None:
        manifest = reconciler.manifests.get(run_id) or {}
        status = str(manifest.get("status", "unknown"))
        if status in SETTLED:  # a repeated request: the verdict stands
            return {"runs": {run_id: status}, "requested": run_id, "already_settled": True}
        results = [reconciler.settle(run_id, final=False, deadline=deadline)]
        interrupted = results[0].continuing
    else:
        results = reconciler.reconcile_pending(settings.reconcile_grace_s, deadline=deadline)
        interrupted = reconciler.interrupted
    recorded = wiring.run_outcomes(settings).record(results)
    if interrupted:  # short of time: a new invocation resumes where this one stopped
        continue_in_new_invocation(event, context)
    answer = {
        "runs": {result.run_id: result.status for result in results},
        "last_success_at": recorded["last_success_at"],
        "events": recorded["events"],
    }
    if run_id is not None:
        answer["requested"] = run_id
    return answer


@metrics.log_metrics
def handle_kinesis(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Kinesis batch -> sinks; returns `batchItemFailures` for Lambda to re-deliver."""
    outcome = process_batch(event["Records"], wiring.load_dependencies())
    handled = handled_per_run(event["Records"], outcome.failed_sequence_numbers)
    wiring.verdict_requests(get_settings(), context).after_load(handled)
    return outcome.response()


@metrics.log_metrics
def handle_work(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS fan-out work items -> publish each page range; raises so that SQS hands the item out
    again (and to the dead-letter queue after a few tries)."""
    done = []
    for record in event["Records"]:
        item = WorkItem.from_json(record["body"])
        counts = run_work_item(wiring.ingest_dependencies(), item)
        done.append(
            {
                "run_id": item.run_id,
                "resource": item.resource,
                "first_page": item.first_page,
                "last_page": item.last_page,
                "fetched": counts.fetched,
                "published": counts.published,
            }
        )
    verdicts = wiring.verdict_requests(get_settings(), context)
    for run_id in dict.fromkeys(item["run_id"] for item in done):
        verdicts.after_ingest(str(run_id))
    return {"work_items": done}
