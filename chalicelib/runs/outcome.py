"""What a settled run means downstream: its run-outcome metrics, the last success, the event.

The reconcile function (`handlers.handle_reconcile`) settles runs with
`chalicelib.reconcile.verdict`;
this module turns each settled verdict into what monitoring and subscribers watch:

- `RunSucceeded` / `RunFailed`, `ReconciliationDifference` per entity and `QuarantineBacklog`
  (`metrics.record_run_outcome`), once per run, when it settles;
- `Freshness`: the age of the last successful run. Its time is kept in the runs table (one
  item, `LAST_SUCCESS_RUN_ID`), so every sweep, on AWS as locally, can say how old the data
  is, also when no run settled (a stopped schedule makes it grow);
- `DatasetUpdated` on the event bus for each run that succeeded (`chalicelib.reconcile.notify`).

The marker item carries `status = succeeded`, so the sweep, which only looks at runs that
are not settled, never mistakes it for a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from chalicelib.deadletter.quarantine import Quarantine
from chalicelib.observability.logging import logger
from chalicelib.observability.metrics import metrics, record_run_outcome
from chalicelib.reconcile.notify import publish_dataset_updated
from chalicelib.runs import counters
from chalicelib.runs.manifest import RunManifests

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

    from chalicelib.reconcile.balance import Reconciliation

LAST_SUCCESS_RUN_ID: Final = "#last-success"
"""Key of the runs-table item holding the last success (`#` never starts a run id)."""


@dataclass
class RunOutcomes:
    """Records the outcome of the runs one reconcile sweep settled."""

    manifests: RunManifests
    quarantine: Quarantine
    events: EventBridgeClient
    bus_name: str
    sinks: Sequence[str] = ()
    """The configured sinks: each gets its `written` count in the event, 0 included."""

    def last_success_at(self) -> datetime | None:
        """When the last successful run settled, from the runs table (None: never)."""
        item = self.manifests.get(LAST_SUCCESS_RUN_ID)
        value = (item or {}).get("succeeded_at")
        if not value:
            return None
        moment = datetime.fromisoformat(str(value))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def record(
        self, results: Sequence[Reconciliation], now: datetime | None = None
    ) -> dict[str, Any]:
        """Metrics, last success and events of the settled `results`; returns what it did."""
        moment = now or datetime.now(UTC)
        last_success = self.last_success_at()
        settled = [result for result in results if result.status in ("succeeded", "failed")]
        backlog = sum(1 for _ in self.quarantine.keys(run_id=None)) if settled else None
        events: dict[str, str] = {}
        for result in settled:
            succeeded = result.status == "succeeded"
            record_run_outcome(
                succeeded=succeeded,
                differences={name: b.missing for name, b in result.entities.items()},
                quarantine_backlog=backlog,
                last_success_at=last_success,
                now=moment,
            )
            if succeeded:
                last_success = moment
                self._remember_success(result.run_id, moment)
                events[result.run_id] = publish_dataset_updated(
                    self.events, self.bus_name, result.run_id, result.status, self.counts(result)
                )
        if not settled and last_success is not None:
            # no run ended in this sweep: the data only got older
            metrics.add_metric("Freshness", max(0.0, (moment - last_success).total_seconds()))
        return {
            "last_success_at": last_success.isoformat(timespec="seconds") if last_success else None,
            "events": events,
        }

    def counts(self, result: Reconciliation) -> dict[str, dict[str, Any]]:
        """Per entity, the run's counts for a subscriber: the reconciliation's balance plus the
        manifest's `published`, `unchanged` (not published: already stored) and `written` per
        sink, so that it can tell whether anything changed (nothing written: skip retraining)."""
        manifest = self.manifests.get(result.run_id) or {}
        counts: dict[str, dict[str, Any]] = {}
        for entity, balance in result.entities.items():
            written = {sink: 0 for sink in self.sinks} | {
                name.split(".")[1]: int(value)
                for name, value in manifest.items()
                if name.startswith(counters.WRITTEN_PREFIX) and name.endswith(f".{entity}")
            }
            counts[entity] = {
                **balance.as_dict(),
                "published": int(manifest.get(counters.published(entity), 0)),
                "unchanged": int(manifest.get(counters.unchanged(entity), 0)),
                "written": written,
            }
        return counts

    def _remember_success(self, run_id: str, moment: datetime) -> None:
        self.manifests.set_fields(
            LAST_SUCCESS_RUN_ID,
            {
                "status": "succeeded",
                "run": run_id,
                "succeeded_at": moment.isoformat(timespec="seconds"),
            },
        )
        logger.info(
            "last success recorded",
            extra={"step": "reconcile", "run_id": run_id, "at": moment.isoformat()},
        )
