"""The stream consumer: decode, validate, write newest-wins into every sink.

A record that can never be stored (not an envelope, breaks the contract) is quarantined at
once and never blocks the shard. A record that could not be written *now* (a sink failed) is
reported in `batchItemFailures`, so that Lambda re-delivers it and what follows it on the
shard, and nothing else. Writes are idempotent, so re-delivery changes nothing already stored.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from chalicelib.deadletter.quarantine import UNATTRIBUTED_RUN, Quarantine, QuarantinedRecord
from chalicelib.load.evidence import LoadEvidence, PageEvidence, page_number, record_digest
from chalicelib.load.sinks import Sink, rejection
from chalicelib.model.contract import (
    ENTITIES,
    describe_validation_error,
    entity_key,
    legacy_partition_key,
    partition_key,
    validate_item,
)
from chalicelib.model.envelope import Envelope, decode_envelope
from chalicelib.observability.logging import PageTally, logger
from chalicelib.observability.metrics import (
    record_quarantined,
    record_sink_failure,
    record_sink_write,
)
from chalicelib.runs import counters
from chalicelib.runs.manifest import RunManifests


class PoisonRecord(ValueError):
    """The record can never be stored; the message is the quarantine reason."""


@dataclass
class LoadDependencies:
    sinks: Sequence[Sink]
    quarantine: Quarantine
    manifests: RunManifests
    evidence: LoadEvidence | None = None
    """Where the load notes what each sink handled without writing (chalicelib/load/evidence.py);
    without it the reconciliation looks those records up key by key."""


@dataclass
class BatchOutcome:
    """What one batch did, per run id: `counts[run_id]["written.dynamodb.users"] = n`."""

    failed_sequence_numbers: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, run_id: str, name: str, value: int) -> None:
        self.counts[run_id][name] = self.counts[run_id].get(name, 0) + value

    def response(self) -> dict[str, list[dict[str, str]]]:
        return {
            "batchItemFailures": [
                {"itemIdentifier": sequence} for sequence in self.failed_sequence_numbers
            ]
        }


def decode_record(record: Mapping[str, Any]) -> Envelope:
    """Decode one Lambda Kinesis record into a validated envelope, or raise PoisonRecord."""
    kinesis = record["kinesis"]
    try:
        data = base64.b64decode(kinesis["data"], validate=True)
        envelope = decode_envelope(data)
        item = validate_item(envelope.entity, envelope.item)
    except ValidationError as error:
        raise PoisonRecord(describe_validation_error(error)) from error
    except (ValueError, binascii.Error) as error:
        raise PoisonRecord(f"not a stream envelope: {str(error)[:300]}") from error
    expected_key = partition_key(envelope.entity, item)
    if kinesis.get("partitionKey") not in (
        expected_key,
        legacy_partition_key(envelope.entity, item),
    ):
        raise PoisonRecord(
            f"partition key {kinesis.get('partitionKey')!r} does not match the item "
            f"({expected_key!r}); ordering of its versions cannot be trusted"
        )
    return envelope.model_copy(update={"item": item})


def process_batch(records: Sequence[Mapping[str, Any]], deps: LoadDependencies) -> BatchOutcome:
    """Load one Lambda batch; returns the failed sequence numbers and the counts per run."""
    outcome = BatchOutcome()
    groups: dict[str, list[tuple[str, Envelope]]] = defaultdict(list)
    for record in records:
        sequence = record["kinesis"]["sequenceNumber"]
        try:
            envelope = decode_record(record)
            unstorable = rejection(deps.sinks, envelope.entity, envelope)
            if unstorable is not None:
                raise PoisonRecord(unstorable)
        except PoisonRecord as poison:
            if not _quarantine(record, str(poison), deps.quarantine, outcome):
                outcome.failed_sequence_numbers.append(sequence)
            continue
        groups[envelope.entity].append((sequence, envelope))

    failed: set[str] = set()
    pages = PageTally()
    skipped: dict[tuple[str, str, int], PageEvidence] = {}
    for entity, members in groups.items():
        envelopes = [envelope for _, envelope in members]
        for envelope in envelopes:
            pages.add(envelope.page, "records")
        for sink in deps.sinks:
            if failed.intersection(sequence for sequence, _ in members):
                # Re-delivered anyway, and written to every sink then. Skipping the sinks after
                # a failed one keeps DynamoDB (always last) from storing a change-detection
                # fingerprint for content another sink lacks (chalicelib/ingest/changes.py).
                break
            started = time.monotonic()
            try:
                written = sink.write(entity, envelopes)
            except Exception:  # any sink error: retry these records, keep the rest
                logger.exception(
                    "sink write failed; records will be re-delivered",
                    extra={"step": "load", "entity": entity, "sink": sink.name},
                )
                failed.update(sequence for sequence, _ in members)
                record_sink_failure(entity, sink.name, len(members))
                continue
            record_sink_write(
                entity, sink.name, envelopes, len(written), time.monotonic() - started
            )
            for envelope in written:
                outcome.add(envelope.run_id, counters.written(sink.name, entity), 1)
                pages.add(envelope.page, counters.written_to(sink.name))
            _note_skipped(skipped, entity, sink.name, envelopes, written)
    outcome.failed_sequence_numbers.extend(
        record["kinesis"]["sequenceNumber"]
        for record in records
        if record["kinesis"]["sequenceNumber"] in failed
    )
    for run_id, counts in outcome.counts.items():
        deps.manifests.add_counts(run_id, counts)
    _record_evidence(deps, skipped)
    logger.info(
        "batch loaded",
        extra={
            "step": "load",
            "records": len(records),
            "failed": len(outcome.failed_sequence_numbers),
            "counts": {run: dict(c) for run, c in outcome.counts.items()},
            "pages": pages.as_dict(),
        },
    )
    return outcome


def _note_skipped(
    skipped: dict[tuple[str, str, int], PageEvidence],
    entity: str,
    sink: str,
    envelopes: Sequence[Envelope],
    written: Sequence[Envelope],
) -> None:
    """Note the digest of each envelope `sink` handled without writing it, per run and page."""
    stored = {id(envelope) for envelope in written}
    for envelope in envelopes:
        if id(envelope) in stored:
            continue
        page = page_number(envelope.page)
        if page is None:  # an envelope without its page: the reconciliation looks it up
            continue
        evidence = skipped.setdefault((envelope.run_id, entity, page), PageEvidence(entity, page))
        digest = record_digest(entity_key(entity, envelope.item), envelope.item["updated_at"])
        evidence.skipped.setdefault(sink, set()).add(digest)


def _record_evidence(
    deps: LoadDependencies, skipped: Mapping[tuple[str, str, int], PageEvidence]
) -> None:
    """One idempotent UpdateItem per page that had records not written. A failure only costs
    the reconciliation a look-up of that page's records, so it is logged, not retried."""
    if deps.evidence is None:
        return
    for (run_id, entity, page), evidence in skipped.items():
        try:
            deps.evidence.record(run_id, evidence)
        except Exception:
            logger.exception(
                "load evidence not recorded; the reconciliation will look the page up",
                extra={"step": "load", "run_id": run_id, "entity": entity, "page": page},
            )


def _quarantine(
    record: Mapping[str, Any], reason: str, quarantine: Quarantine, outcome: BatchOutcome
) -> bool:
    """Put a poison record in the dead-letter store; False if even that failed (retry it)."""
    kinesis = record["kinesis"]
    raw = kinesis.get("data", "")
    try:
        payload = base64.b64decode(raw)
    except (binascii.Error, ValueError, TypeError):
        payload = str(raw).encode()
    entity, run_id = _attribution(payload, str(kinesis.get("partitionKey", "")))
    try:
        created = quarantine.put(
            QuarantinedRecord(
                run_id=run_id,
                entity=entity,
                origin=_origin(record),
                reason=reason,
                payload=payload,
            )
        )
    except Exception:
        logger.exception("quarantine write failed", extra={"step": "load", "entity": entity})
        return False
    if created:  # a re-delivered record is already quarantined and counted
        outcome.add(run_id, counters.quarantined("load", entity), 1)
        record_quarantined(entity, "load")
    logger.warning(
        "record quarantined",
        extra={"step": "load", "entity": entity, "run_id": run_id, "reason": reason[:300]},
    )
    return True


def _origin(record: Mapping[str, Any]) -> str:
    """`load-<shard>-<sequence>`: a sequence number is only unique within its shard (moto
    numbers every shard from 1), so two poison records of one run must not share an object."""
    sequence = str(record["kinesis"]["sequenceNumber"])
    shard = str(record.get("eventID", "")).removesuffix(f":{sequence}")
    return f"load-{shard}-{sequence}" if shard else f"load-{sequence}"


def _attribution(payload: bytes, key: str) -> tuple[str, str]:
    """Best-effort entity and run id of a broken record, so it is counted where it belongs."""
    entity = key.split(":", 1)[0] if key.split(":", 1)[0] in ENTITIES else "unknown"
    run_id = UNATTRIBUTED_RUN
    try:
        document = orjson.loads(payload)
        if isinstance(document, dict):
            candidate = document.get("run_id")
            if isinstance(candidate, str) and candidate.replace("-", "").isalnum():
                run_id = candidate[:100]
            if document.get("entity") in ENTITIES:
                entity = document["entity"]
    except orjson.JSONDecodeError:
        pass
    return entity, run_id
