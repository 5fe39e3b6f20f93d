"""Ask for a run's verdict as soon as it is loaded, not at the next reconcile schedule.

The reconcile function runs on a schedule (every 15 minutes on AWS), so a run finished a
minute after a sweep would wait that long for its verdict and its DatasetUpdated event. The
pipeline asks for it instead:

- the load function adds, per run, the records of its batch it handled (stored, quarantined,
  found older than what is stored: everything but the sequence numbers it hands back for
  re-delivery) to the run's manifest item, an atomic `ADD loaded_records`, and reads the new
  item back in the same call;
- whoever sees the run's ingestion finished (`ingest_status` published) and
  `loaded_records >= sum(published.<resource>)` (the load after its batch, or the ingest /
  the last fan-out worker when the load was faster) sets `verdict_requested_at` on the item,
  conditionally, so that only one of them asks, and invokes the reconcile function
  asynchronously with a `RunLoaded` event naming the run (`verdict_event`).

Counting is not exact and need not be: a re-delivered batch is added again, so the request can
come early; the reconcile function then finds the run not balanced yet and leaves it
`reconciling` (the request is never `final`), and the schedule, which stays, settles it. A
request that fails (the invoke, a throttled update) is logged and left to the schedule too: it
never fails the load's batch. The reconcile function's name follows Chalice's naming of the
functions of one app and stage (`<app>-<stage>-<function>`), derived from the caller's own
ARN in its Lambda context, so no setting can point it at another stage.
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from chalicelib.aws import clients as aws
from chalicelib.observability.logging import logger
from chalicelib.runs import counters
from chalicelib.runs.manifest import RunManifests

LOADED = "loaded_records"
REQUESTED = "verdict_requested_at"
SOURCE = "moovitamix.pipeline"
DETAIL_TYPE = "RunLoaded"
RECONCILE_FUNCTION = "reconcile"


def verdict_event(run_id: str, function_arn: str = "") -> dict[str, Any]:
    """The event the reconcile function receives for one loaded run: EventBridge's shape (the
    one its schedule delivers, which Chalice's handler reads), with the run in `detail`."""
    parts = function_arn.split(":")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": SOURCE,
        "account": parts[4] if len(parts) > 4 else "",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": parts[3] if len(parts) > 3 else "",
        "resources": [function_arn] if function_arn else [],
        "detail": {"run_id": run_id},
    }


def requested_run(event: Mapping[str, Any]) -> str | None:
    """The run a `RunLoaded` event asks the verdict of; None for the schedule's event."""
    if event.get("source") != SOURCE or event.get("detail-type") != DETAIL_TYPE:
        return None
    run_id = (event.get("detail") or {}).get("run_id")
    return str(run_id) if run_id else None


def sibling_function_arn(context: Any, function: str) -> str | None:
    """The ARN of another function of the caller's app and stage (Chalice names them
    `<app>-<stage>-<function>`); None when the context names no function."""
    arn = str(getattr(context, "invoked_function_arn", "") or "")
    prefix, marker, rest = arn.partition(":function:")
    if not marker:
        return None
    name = rest.split(":", 1)[0]  # without a qualifier (alias or version)
    stem, dash, _ = name.rpartition("-")
    if not dash:
        return None
    return f"{prefix}:function:{stem}-{function}"


def handled_per_run(
    records: Sequence[Mapping[str, Any]], failed_sequence_numbers: Sequence[str]
) -> dict[str, int]:
    """{run id: records of the batch handled} (not handed back for re-delivery). A record
    whose run cannot be read (not an envelope) counts for no run."""
    failed = set(failed_sequence_numbers)
    handled: Counter[str] = Counter()
    for record in records:
        kinesis = record.get("kinesis", {})
        if kinesis.get("sequenceNumber") in failed:
            continue
        try:
            document = orjson.loads(base64.b64decode(kinesis.get("data", "")))
        except (ValueError, TypeError):
            continue
        run_id = document.get("run_id") if isinstance(document, dict) else None
        if isinstance(run_id, str) and run_id:
            handled[run_id] += 1
    return dict(handled)


def is_loaded(item: Mapping[str, Any]) -> bool:
    """Whether a manifest item (DynamoDB's attribute-value shape) says ingest finished and
    at least as many records loaded as published."""
    if item.get("ingest_status", {}).get("S") != "published":
        return False
    if REQUESTED in item:
        return False
    resources = [name for name in item.get("resources", {}).get("S", "").split(",") if name]
    published = sum(int(item.get(counters.published(name), {}).get("N", "0")) for name in resources)
    return int(item.get(LOADED, {}).get("N", "0")) >= published


class VerdictRequests:
    """The early verdict request of the load, the ingest and the fan-out workers."""

    def __init__(self, manifests: RunManifests, context: Any) -> None:
        """`context` is the caller's Lambda context: its ARN names the reconcile function."""
        self.manifests = manifests
        self.reconcile_arn = sibling_function_arn(context, RECONCILE_FUNCTION)

    def after_load(self, handled: Mapping[str, int]) -> list[str]:
        """Add what one batch handled; ask for the verdict of each run now loaded."""
        requested = []
        for run_id, count in handled.items():
            if count <= 0:
                continue
            try:
                item = self.manifests.add_to_existing(run_id, LOADED, count)
                if is_loaded(item) and self._request(run_id):
                    requested.append(run_id)
            except Exception:  # the schedule settles the run anyway
                logger.warning(
                    "could not request the run's verdict early; the reconcile schedule will",
                    extra={"step": "load", "run_id": run_id},
                    exc_info=True,
                )
        return requested

    def after_ingest(self, run_id: str) -> bool:
        """The ingest (or a worker) finished its part: ask if the load was faster."""
        try:
            item = self.manifests.get_typed(run_id)
            if not item:
                return False
            return is_loaded(item) and self._request(run_id)
        except Exception:
            logger.warning(
                "could not request the run's verdict early; the reconcile schedule will",
                extra={"step": "ingest", "run_id": run_id},
                exc_info=True,
            )
            return False

    def _request(self, run_id: str) -> bool:
        """Mark the request (once per run), then invoke the reconcile function async."""
        if self.reconcile_arn is None:
            return False
        moment = datetime.now(UTC).isoformat(timespec="milliseconds")
        if not self.manifests.set_once(run_id, REQUESTED, moment):
            return False  # someone else asked already
        aws.client("lambda").invoke(
            FunctionName=self.reconcile_arn,
            InvocationType="Event",
            Payload=orjson.dumps(verdict_event(run_id, self.reconcile_arn)),
        )
        logger.info(
            "run loaded: verdict requested",
            extra={"step": "reconcile", "run_id": run_id, "function": self.reconcile_arn},
        )
        return True
