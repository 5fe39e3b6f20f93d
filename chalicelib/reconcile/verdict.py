"""Reconciliation: did every record a run fetched end up stored (newest) or quarantined?

The ingest's page ledger (`chalicelib.runs.ledger`) lists every fetched record of a run: its key
and version, or the position it was quarantined at. Once the stream is drained, the reconciler
walks the ledger page by page and settles each page from evidence that costs O(pages), not
O(records), in calls:

- the rows the run wrote, read back in bulk from every sink (each row carries `run_id` and
  `run_page`: a DynamoDB Query on the `by_run` index returns 1 MB of them per call, PostgreSQL
  a keyset page of 5,000 per statement), in page order beside the ledger;
- the load's evidence (`chalicelib.load.evidence`): per page and sink, the digests of the records
  the sink handled without writing them (its stored version was not older);
- the ledger's count of records the ingest did not publish because every sink stores them
  (`unchanged`, change detection), and the run's quarantine.

A page balances when, for every sink, each of its records has a row of this run and page at
exactly its version, or is in that sink's evidence, or is quarantined, and the records left
over are exactly the page's `unchanged` count (the same ones in every sink). Only a page that
does not balance (a row deleted or made older behind the pipeline's back, a row a later run
overwrote, evidence that could not be written, the index lagging, a redriven record) is
checked key by key against every sink (`chalicelib.reconcile.key_check`): a lost record is
still found and named.

What the fast path trusts, beyond today's key-level check: that a sink never loses or
downgrades a row it did not write for this run (records it skipped because a version at least
as new was stored: re-deliveries, repeats, another run's newer version), and the change
detector's look-up for the records not published. A record settled from the load's evidence
is counted `superseded` (the sink already held a version at least as new), one found by its
row `stored`, an unchanged one `stored`.

Each sink's read-back runs a few thousand rows ahead in a thread of its own
(`chalicelib.reconcile.read_ahead`): the store works on the next page while the reconciler
settles this one. Memory holds one ledger page, one evidence item and the read-ahead of each
sink (at most `DEPTH` chunks of `CHUNK` rows), plus the keys of the run's quarantined records
(few by nature), whatever the size of the run.

**Continuation.** Between pages the reconciler checks the Lambda context's remaining time;
short of it, it writes its position (the last page settled and the balances so far) into the
run's manifest and stops; the handler invokes the function again, which resumes there.

Each fetched record is exactly one of: **stored** (every sink holds its version), **superseded**
(every sink holds a newer version, or the run fetched its key before: a repeat), **quarantined**
or **missing**; so fetched = stored + superseded + quarantined + missing. Telling a repeat
apart keeps a 64-bit hash of each key a run fetched (about 60 bytes a record in memory): a
hash collision could only move a record from stored to superseded, never hide a missing one.

**Quality gate.** A resource whose quarantined share of its fetched records is above
`max_quarantine_ratio` (`PIPELINE_MAX_QUARANTINE_RATIO`) fails the run, with a reason, even
when it balances: a source that breaks the contract for most records is not "succeeded".

In AWS the `reconcile` function runs on its own schedule: it reconciles every run that is not
settled yet; a run that balances becomes `succeeded` at once, one that still does not balance
`reconcile_grace_s` after it started (longer than the load mapping keeps retrying a record)
becomes `failed`. The local cloud calls the same code once its driver has drained the stream.

**Isolation.** Every run is settled on its own: an exception while reconciling one run never
stops the sweep. A transient one (throttling, a connection, a timeout) leaves the run for the
next sweep, with the error in its manifest; any other (a bug, a malformed ledger) declares
that run `failed` with the error as its reason, since sweeping it again would fail again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.deadletter.quarantine import Quarantine
from chalicelib.load.evidence import LoadEvidence
from chalicelib.observability.logging import logger
from chalicelib.observability.metrics import record_run_balance
from chalicelib.reconcile.balance import EntityBalance, Reconciliation, restore_position
from chalicelib.reconcile.key_check import VersionedSink, check_page_by_key, quarantine_index
from chalicelib.reconcile.page_settling import Ahead, QuarantineIndex, RunRows, settle_page
from chalicelib.reconcile.read_ahead import ReadAhead
from chalicelib.runs import counters
from chalicelib.runs.ledger import NEVER, Deadline, RunProgress
from chalicelib.runs.manifest import RunManifests

SETTLED: Final = frozenset({"succeeded", "failed"})
STOP_MARGIN_S: Final = 60.0
"""Stop and continue in a new invocation when less than this is left of the Lambda's time."""
POSITION_FIELD: Final = "reconcile_position"
"""Manifest field: where an interrupted reconciliation resumes (JSON: page id, balances)."""
DEFAULT_MAX_QUARANTINE_RATIO: Final = 0.10
TRANSIENT_ERROR_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
    }
)
"""AWS error codes that a later sweep may not meet again."""


class Reconciler:
    """Checks runs against the stores; writes the verdict into the run manifest."""

    def __init__(
        self,
        progress: RunProgress,
        quarantine: Quarantine,
        sinks: Sequence[VersionedSink],
        manifests: RunManifests,
        max_quarantine_ratio: float = DEFAULT_MAX_QUARANTINE_RATIO,
        evidence: LoadEvidence | None = None,
    ) -> None:
        self.progress = progress
        self.quarantine = quarantine
        self.sinks = sinks
        self.manifests = manifests
        self.max_quarantine_ratio = max_quarantine_ratio
        self.evidence = evidence
        self.interrupted = False
        """The last `reconcile_pending` stopped short of its deadline: invoke it again."""

    def _readers(self, run_id: str, entity: str, after_page: int) -> dict[str, RunRows]:
        """A read-back of the run's rows per sink that can give them (`run_rows`)."""
        readers = {}
        for sink in self.sinks:
            run_rows = getattr(sink, "run_rows", None)
            if run_rows is not None:
                readers[sink.name] = RunRows(ReadAhead(run_rows(entity, run_id, after_page)))
        return readers

    def _start_readers(
        self, run_id: str, entities: list[str], after: str | None
    ) -> dict[str, dict[str, RunRows]]:
        """Every entity's read-back still to settle, started at once: while one entity is
        settled, the stores already answer for the next. The ledger lists pages by
        `<entity>#<number>`, so an entity before the saved position is done, and the
        position's own entity resumes after its page."""
        after_entity, _, after_number = (after or "").partition("#")
        readers: dict[str, dict[str, RunRows]] = {}
        for entity in sorted(entities):
            if after is not None and entity < after_entity:
                continue
            start = int(after_number) if after is not None and entity == after_entity else 0
            readers[entity] = self._readers(run_id, entity, start)
        return readers

    def _save_position(self, result: Reconciliation, page_id: str) -> None:
        """Stop here: the balances so far and the last page settled, for the next invocation."""
        position = {
            "page_id": page_id,
            "entities": {name: balance.as_dict() for name, balance in result.entities.items()},
        }
        fields = {POSITION_FIELD: orjson.dumps(position).decode(), "status": "reconciling"}
        self.manifests.set_fields(result.run_id, fields)
        result.continuing = True
        logger.info(
            "reconciliation continues in a new invocation",
            extra={"step": "reconcile", "run_id": result.run_id, "page_id": page_id},
        )

    # -- one run -----------------------------------------------------------------------------

    def reconcile(self, run_id: str, *, final: bool, deadline: Deadline = NEVER) -> Reconciliation:
        """Balance one run; `final` when nothing is in flight any more (a failure is final).

        Short of `deadline`, saves its position in the manifest and returns a result that is
        `continuing` (status `reconciling`); the next call resumes there."""
        manifest = self.manifests.get(run_id)
        if manifest is None:
            return Reconciliation(run_id, "failed", reasons=[f"run {run_id} has no manifest"])
        resources = [name for name in str(manifest.get("resources", "")).split(",") if name]
        result = Reconciliation(run_id, "reconciling")
        indexes: dict[str, QuarantineIndex] = {}
        for entity in resources:
            result.entities[entity] = EntityBalance()
            indexes[entity] = quarantine_index(self.quarantine, run_id, entity)
        after = restore_position(manifest.get(POSITION_FIELD), result)
        if not self._walk(run_id, after, result, indexes, deadline):
            return result  # continues in a new invocation

        ingest_status = str(manifest.get("ingest_status", "running"))
        if ingest_status != "published":
            result.reasons.append(f"ingest is {ingest_status}, not published")
        for entity, balance in result.entities.items():
            counted = int(manifest.get(counters.fetched(entity), 0))
            if counted != balance.fetched:
                result.reasons.append(
                    f"{entity}: the manifest counts {counted} fetched, the ledger {balance.fetched}"
                )
            if balance.missing:
                result.reasons.append(
                    f"{entity}: {balance.missing} of {balance.fetched} fetched records are neither "
                    f"stored nor quarantined, e.g. {', '.join(balance.missing_records[:5])}"
                )
            if balance.quarantined_ratio > self.max_quarantine_ratio:
                result.quality_failures.append(entity)
                result.reasons.append(
                    f"{entity}: {balance.quarantined} of {balance.fetched} fetched records "
                    f"quarantined ({balance.quarantined_ratio:.0%}), above the quality gate "
                    f"PIPELINE_MAX_QUARANTINE_RATIO={self.max_quarantine_ratio:g}; read the "
                    "quarantine reasons (did the source change its schema?)"
                )
        if not result.reasons:
            result.status = "succeeded"
        elif final or len(result.reasons) == len(result.quality_failures):
            # the gate is a verdict on what is accounted for: waiting would not change it
            result.status = "failed"
        self._record(result)
        return result

    def _walk(
        self,
        run_id: str,
        after: str | None,
        result: Reconciliation,
        indexes: dict[str, QuarantineIndex],
        deadline: Deadline,
    ) -> bool:
        """Settle the run's ledger pages after `after` into `result`: each from the read-back
        and the evidence, or key by key. False when it stopped short of `deadline` (the
        position is saved for the next invocation)."""
        evidence = Ahead(
            self.evidence.pages(run_id, after) if self.evidence is not None else iter(())
        )
        readers = self._start_readers(run_id, list(result.entities), after)
        seen: dict[str, set[int]] = defaultdict(set)
        last: str | None = None
        try:
            for page in self.progress.pages(run_id, after):
                if last is not None and deadline.reached():
                    self._save_position(result, last)
                    return False
                balance = result.entities.setdefault(page.resource, EntityBalance())
                if page.resource not in indexes:  # (not setdefault: it would list S3 every page)
                    indexes[page.resource] = quarantine_index(
                        self.quarantine, run_id, page.resource
                    )
                index = indexes[page.resource]
                if page.resource not in readers:
                    readers[page.resource] = self._readers(run_id, page.resource, page.number - 1)
                by_sink = readers[page.resource]
                rows = {name: reader.page(page.number) for name, reader in by_sink.items()}
                found = evidence.take(lambda noted, page_id=page.page_id: noted.page_id < page_id)
                if found is not None and found.page_id == page.page_id:
                    evidence.next()
                else:
                    found = None
                settled = (
                    settle_page(page, rows, found, index, [sink.name for sink in self.sinks])
                    if len(rows) == len(self.sinks)
                    else None
                )
                if settled is not None:
                    result.pages_balanced += 1
                    balance.fetched += settled.fetched
                    balance.stored += settled.stored
                    balance.superseded += settled.superseded
                    balance.quarantined += settled.quarantined
                else:
                    result.pages_by_key += 1
                    check_page_by_key(page, balance, index, self.sinks, seen[page.resource])
                last = page.page_id
        finally:
            for by_sink in readers.values():
                for reader in by_sink.values():
                    reader.close()
        return True

    def _record(self, result: Reconciliation) -> None:
        fields: dict[str, Any] = {
            "status": {"S": result.status},
            "reconciled_at": {"S": datetime.now(UTC).isoformat(timespec="seconds")},
            "reconcile_reasons": {"S": "; ".join(result.reasons)[:2000] or "balanced"},
        }
        for entity, balance in result.entities.items():
            fields[counters.reconciled("stored", entity)] = {"N": str(balance.stored)}
            fields[counters.reconciled("quarantined", entity)] = {"N": str(balance.quarantined)}
            fields[counters.reconciled("missing", entity)] = {"N": str(balance.missing)}
            fields[counters.reconciled("superseded", entity)] = {"N": str(balance.superseded)}
            if balance.missing_records:
                fields[f"missing_records.{entity}"] = {
                    "S": orjson.dumps(balance.missing_records).decode()
                }
        fields[counters.PAGES_BALANCED] = {"N": str(result.pages_balanced)}
        fields[counters.PAGES_BY_KEY] = {"N": str(result.pages_by_key)}
        self.manifests.set_and_remove(result.run_id, fields, POSITION_FIELD)
        log = logger.info if result.status != "failed" else logger.error
        log(
            "run reconciled",
            extra={
                "step": "reconcile",
                "run_id": result.run_id,
                "status": result.status,
                "entities": {name: b.as_dict() for name, b in result.entities.items()},
                "reasons": result.reasons,
                "pages_balanced": result.pages_balanced,
                "pages_by_key": result.pages_by_key,
            },
        )
        if result.status in SETTLED:  # once per run: a run still reconciling is seen again
            record_run_balance(
                superseded={name: b.superseded for name, b in result.entities.items()},
                quality_failures=result.quality_failures,
            )

    # -- the schedule ------------------------------------------------------------------------

    def reconcile_pending(
        self, grace_s: float, now: datetime | None = None, deadline: Deadline = NEVER
    ) -> list[Reconciliation]:
        """Reconcile every run that is not settled; give up on those older than `grace_s`
        (counted from their start, or from their last redrive). Short of `deadline`, stops
        with `interrupted` set: the caller invokes the function again to go on."""
        moment = now or datetime.now(UTC)
        results = []
        self.interrupted = False
        for run_id, since in self._unsettled_runs():
            if deadline.reached():
                self.interrupted = True
                break
            age_s = (moment - _as_utc(since)).total_seconds()
            result = self.settle(run_id, final=age_s > grace_s, deadline=deadline)
            results.append(result)
            if result.continuing:
                self.interrupted = True
                break
        return results

    def settle(self, run_id: str, *, final: bool, deadline: Deadline = NEVER) -> Reconciliation:
        """`reconcile` one run in isolation: whatever it raises stays with this run."""
        try:
            return self.reconcile(run_id, final=final, deadline=deadline)
        except Exception as error:  # one broken run never blocks another
            transient = is_transient(error)
            message = f"reconciliation raised {type(error).__name__}: {str(error)[:500]}"
            status = "reconciling" if transient and not final else "failed"
            if transient and not final:
                message += " (transient: the next sweep tries again)"
            logger.exception(
                "run could not be reconciled",
                extra={"step": "reconcile", "run_id": run_id, "status": status},
            )
            result = Reconciliation(run_id, status, reasons=[message], error=message)
            try:
                self.manifests.set_fields(
                    run_id,
                    {
                        "status": status,
                        "reconciled_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "reconcile_reasons": message[:2000],
                    },
                )
            except Exception:  # the manifest store itself fails: the next sweep sees the run
                logger.exception(
                    "verdict could not be recorded", extra={"step": "reconcile", "run_id": run_id}
                )
                result.status = "reconciling"
            return result

    def _unsettled_runs(self) -> Iterable[tuple[str, str]]:
        for item in self.manifests.scan(("run_id", "started_at", "redriven_at", "status")):
            if item.get("status", {}).get("S") not in SETTLED:
                since = max(
                    item.get("started_at", {}).get("S", ""),
                    item.get("redriven_at", {}).get("S", ""),
                    key=lambda value: _as_utc(value) if value else _as_utc("1970-01-01"),
                )
                yield item["run_id"]["S"], since


def is_transient(error: BaseException) -> bool:
    """Whether a later sweep may well not meet `error` again (throttling, network, timeouts)."""
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code", "") in TRANSIENT_ERROR_CODES
    return isinstance(error, BotoCoreError | OSError | psycopg.OperationalError)


def _as_utc(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
