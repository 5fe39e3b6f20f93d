"""Reconciliation: did every record a run fetched end up stored (newest) or quarantined?

The ingest's page ledger (`chalicelib.progress`) lists every fetched record of a run: its key
and version, or the position it was quarantined at. Once the stream is drained, the reconciler
walks the ledger page by page and checks, per record, that every sink stores its key with an
`updated_at` at least as new as the fetched one (a later run may have stored a newer version),
or that it is in the quarantine (or was redriven and is now stored). A run is `succeeded` only
when every record is accounted for; otherwise the manifest says how many are missing per
entity and names some of them.

Memory holds one ledger page and one lookup chunk per entity, plus the keys of the run's
quarantined records (few by nature), whatever the size of the run.

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

import hashlib
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson
import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from chalicelib.deadletter.quarantine import Quarantine, QuarantinedRecord
from chalicelib.manifest import RunManifests
from chalicelib.model.contract import entity_key, parse_timestamp, validate_item
from chalicelib.model.envelope import decode_envelope
from chalicelib.observability.logging import logger
from chalicelib.observability.metrics import record_run_balance
from chalicelib.progress import PageLedger, RunProgress

LOOKUP_CHUNK: Final = 100
"""Keys looked up in the sinks at once (one BatchGetItem)."""
MISSING_SAMPLES: Final = 20
"""Missing records named per entity in the manifest and the report."""
SETTLED: Final = frozenset({"succeeded", "failed"})
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


class VersionedSink(Protocol):
    """A sink that can say which version of each key it stores (every sink of the pipeline)."""

    name: str

    def stored_versions(self, entity: str, keys: Sequence[Hashable]) -> Mapping[Hashable, str]: ...


@dataclass
class EntityBalance:
    """Per entity: fetched = stored + quarantined + missing."""

    fetched: int = 0
    stored: int = 0
    quarantined: int = 0
    missing: int = 0
    missing_records: list[str] = field(default_factory=list)
    superseded: int = 0
    """Fetched records whose key every sink holds at a newer version, or that the run fetched
    again (a repeat): accounted for, not stored as such."""

    @property
    def quarantined_ratio(self) -> float:
        return self.quarantined / self.fetched if self.fetched else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "fetched": self.fetched,
            "stored": self.stored,
            "quarantined": self.quarantined,
            "missing": self.missing,
            "missing_records": list(self.missing_records),
            "superseded": self.superseded,
        }


@dataclass
class Reconciliation:
    run_id: str
    status: str
    entities: dict[str, EntityBalance] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    quality_failures: list[str] = field(default_factory=list)
    """Entities whose quarantined share is above the quality gate."""
    error: str | None = None
    """The exception that interrupted this run's reconciliation, if one did."""

    @property
    def balanced(self) -> bool:
        return all(balance.missing == 0 for balance in self.entities.values())

    def as_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            "status": self.status,
            "entities": {name: balance.as_dict() for name, balance in self.entities.items()},
            "reasons": list(self.reasons),
        }
        if self.quality_failures:
            summary["quality_failures"] = list(self.quality_failures)
        if self.error is not None:
            summary["error"] = self.error
        return summary


@dataclass
class _QuarantineIndex:
    """What the quarantine says about one run and entity."""

    ingest_origins: set[str] = field(default_factory=set)
    load_keys: set[Hashable] = field(default_factory=set)
    redriven: dict[str, tuple[Hashable, str]] = field(default_factory=dict)


@dataclass
class _Pending:
    """A fetched record waiting for its sink lookup."""

    key: tuple[Any, ...]
    version: str
    origin: str


class Reconciler:
    """Checks runs against the stores; writes the verdict into the run manifest."""

    def __init__(
        self,
        progress: RunProgress,
        quarantine: Quarantine,
        sinks: Sequence[VersionedSink],
        manifests: RunManifests,
        max_quarantine_ratio: float = DEFAULT_MAX_QUARANTINE_RATIO,
    ) -> None:
        self.progress = progress
        self.quarantine = quarantine
        self.sinks = sinks
        self.manifests = manifests
        self.max_quarantine_ratio = max_quarantine_ratio

    # -- one run -----------------------------------------------------------------------------

    def reconcile(self, run_id: str, *, final: bool) -> Reconciliation:
        """Balance one run; `final` when nothing is in flight any more (a failure is final)."""
        manifest = self.manifests.get(run_id)
        if manifest is None:
            return Reconciliation(run_id, "failed", reasons=[f"run {run_id} has no manifest"])
        resources = [name for name in str(manifest.get("resources", "")).split(",") if name]
        result = Reconciliation(run_id, "reconciling")
        indexes: dict[str, _QuarantineIndex] = {}
        for entity in resources:
            result.entities[entity] = EntityBalance()
            indexes[entity] = self._quarantine_index(run_id, entity)
        pending: dict[str, list[_Pending]] = defaultdict(list)
        seen: dict[str, set[int]] = defaultdict(set)
        for page in self.progress.pages(run_id):
            balance = result.entities.setdefault(page.resource, EntityBalance())
            index = indexes.setdefault(page.resource, self._quarantine_index(run_id, page.resource))
            for item in self._fetched(page, balance, index):
                pending[page.resource].append(item)
                if len(pending[page.resource]) >= LOOKUP_CHUNK:
                    self._check(
                        page.resource,
                        pending.pop(page.resource),
                        balance,
                        index,
                        seen[page.resource],
                    )
        for entity, items in pending.items():
            self._check(entity, items, result.entities[entity], indexes[entity], seen[entity])
        seen.clear()

        ingest_status = str(manifest.get("ingest_status", "running"))
        if ingest_status != "published":
            result.reasons.append(f"ingest is {ingest_status}, not published")
        for entity, balance in result.entities.items():
            counted = int(manifest.get(f"fetched.{entity}", 0))
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

    def _fetched(
        self, page: PageLedger, balance: EntityBalance, index: _QuarantineIndex
    ) -> Iterable[_Pending]:
        """Count a page's records; yield those to look up in the sinks."""
        for position, key, version in page.entries:
            balance.fetched += 1
            origin = f"ingest-p{page.number}-i{position}"
            if key is not None and version is not None:
                yield _Pending(tuple(key), version, origin)
            elif origin in index.ingest_origins:
                balance.quarantined += 1
            elif origin in index.redriven:
                redriven_key, redriven_version = index.redriven[origin]
                yield _Pending(tuple(redriven_key), redriven_version, origin)  # type: ignore[arg-type]
            else:
                self._missing(balance, f"{page.resource} page {page.number} item {position}")

    def _check(
        self,
        entity: str,
        items: list[_Pending],
        balance: EntityBalance,
        index: _QuarantineIndex,
        seen: set[int] | None = None,
    ) -> None:
        keys = list(dict.fromkeys(item.key for item in items))  # a page may repeat a key
        stored_by_sink = {sink.name: sink.stored_versions(entity, keys) for sink in self.sinks}
        repeats = seen if seen is not None else set()
        for item in items:
            wanted = parse_timestamp(item.version)
            lacking = [
                name
                for name, stored in stored_by_sink.items()
                if item.key not in stored or parse_timestamp(stored[item.key]) < wanted
            ]
            if not lacking:
                digest = _key_digest(item.key)
                newer = any(
                    parse_timestamp(stored[item.key]) > wanted for stored in stored_by_sink.values()
                )
                if digest in repeats or newer:
                    balance.superseded += 1
                else:
                    balance.stored += 1
                repeats.add(digest)
            elif item.key in index.load_keys:
                balance.quarantined += 1
            else:
                label = ":".join([entity, *(str(part) for part in item.key)])
                self._missing(balance, f"{label}@{item.version} (not in {', '.join(lacking)})")

    @staticmethod
    def _missing(balance: EntityBalance, label: str) -> None:
        balance.missing += 1
        if len(balance.missing_records) < MISSING_SAMPLES:
            balance.missing_records.append(label)

    def _quarantine_index(self, run_id: str, entity: str) -> _QuarantineIndex:
        index = _QuarantineIndex()
        for key in self.quarantine.keys(f"{run_id}/{entity}"):
            origin = key.rsplit("/", 1)[-1].removesuffix(".json")
            if origin.startswith("ingest-"):
                index.ingest_origins.add(origin)
            else:
                record = self.quarantine.get(key)
                item_key = _key_of_envelope(entity, record.payload)
                if item_key is not None:
                    index.load_keys.add(item_key)
        for marker in self.quarantine.redriven(run_id, entity):
            if marker.key_parts is not None and marker.updated_at is not None:
                index.redriven[marker.origin] = (tuple(marker.key_parts), marker.updated_at)
        return index

    def _record(self, result: Reconciliation) -> None:
        fields: dict[str, Any] = {
            "status": {"S": result.status},
            "reconciled_at": {"S": datetime.now(UTC).isoformat(timespec="seconds")},
            "reconcile_reasons": {"S": "; ".join(result.reasons)[:2000] or "balanced"},
        }
        for entity, balance in result.entities.items():
            fields[f"reconciled.stored.{entity}"] = {"N": str(balance.stored)}
            fields[f"reconciled.quarantined.{entity}"] = {"N": str(balance.quarantined)}
            fields[f"reconciled.missing.{entity}"] = {"N": str(balance.missing)}
            fields[f"reconciled.superseded.{entity}"] = {"N": str(balance.superseded)}
            if balance.missing_records:
                fields[f"missing_records.{entity}"] = {
                    "S": orjson.dumps(balance.missing_records).decode()
                }
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": value for i, value in enumerate(fields.values())}
        self.manifests.client.update_item(
            TableName=self.manifests.table_name,
            Key={"run_id": {"S": result.run_id}},
            UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        log = logger.info if result.status != "failed" else logger.error
        log(
            "run reconciled",
            extra={
                "step": "reconcile",
                "run_id": result.run_id,
                "status": result.status,
                "entities": {name: b.as_dict() for name, b in result.entities.items()},
                "reasons": result.reasons,
            },
        )
        if result.status in SETTLED:  # once per run: a run still reconciling is seen again
            record_run_balance(
                superseded={name: b.superseded for name, b in result.entities.items()},
                quality_failures=result.quality_failures,
            )

    # -- the schedule ------------------------------------------------------------------------

    def reconcile_pending(
        self, grace_s: float, now: datetime | None = None
    ) -> list[Reconciliation]:
        """Reconcile every run that is not settled; give up on those older than `grace_s`
        (counted from their start, or from their last redrive)."""
        moment = now or datetime.now(UTC)
        results = []
        for run_id, since in self._unsettled_runs():
            age_s = (moment - _as_utc(since)).total_seconds()
            results.append(self.settle(run_id, final=age_s > grace_s))
        return results

    def settle(self, run_id: str, *, final: bool) -> Reconciliation:
        """`reconcile` one run in isolation: whatever it raises stays with this run."""
        try:
            return self.reconcile(run_id, final=final)
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
        paginator = self.manifests.client.get_paginator("scan")
        for response in paginator.paginate(
            TableName=self.manifests.table_name,
            ProjectionExpression="run_id, started_at, redriven_at, #s",
            ExpressionAttributeNames={"#s": "status"},
        ):
            for item in response.get("Items", []):
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


def _key_digest(key: tuple[Any, ...]) -> int:
    """64 bits of a key: what the reconciler remembers of each fetched key of a run."""
    text = "\x1f".join(str(part) for part in key).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _as_utc(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _key_of_envelope(entity: str, payload: bytes) -> Hashable | None:
    """The key of a quarantined stream record, when its payload still names one."""
    try:
        envelope = decode_envelope(payload)
    except ValueError:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        item = document.get("item") if isinstance(document, dict) else None
        if not isinstance(item, dict):
            return None
    else:
        item = envelope.item
    try:
        return entity_key(entity, validate_item(entity, item))
    except (ValidationError, KeyError):
        try:
            return entity_key(entity, item)
        except (KeyError, ValueError, TypeError):
            return None


def quarantined_record_key(record: QuarantinedRecord) -> Hashable | None:
    """Key of a quarantined load-side record (for redrive and reports)."""
    return _key_of_envelope(record.entity, record.payload)
