"""Redrive: give records that were set aside another chance, once the cause is fixed.

Two sources, the same code in AWS and in the local cloud:

- the **quarantine** (S3): every record is validated again against the contract as it is now;
  the ones that pass are re-published to Kinesis and their object moves under `redriven/`
  (with the key and version it became), the others stay where they are, counted;
- the load mapping's **on-failure queue** (SQS): each message names a range of one shard; the
  range is read back from the stream (while the stream still retains it) and re-published
  as it was, then the message is deleted. A range the stream no longer holds is reported and
  its message kept.

Redriven records keep the run id they were fetched under (not a new one): they belong to that
run, whose reconciliation then balances once they are loaded. The run's manifest goes back to
`reconciling` (with `redriven_at`), so the scheduled reconciler looks at it again, and counts
`redriven.<entity>`. Each redrive has its own id, kept in the `redriven/` markers and in logs.
Re-publishing is idempotent downstream (newest-wins), so a redrive interrupted half-way can
simply be run again.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from chalicelib.deadletter.failures import FailureRecord
from chalicelib.deadletter.quarantine import UNATTRIBUTED_RUN, Quarantine, QuarantinedRecord
from chalicelib.model.contract import (
    ENTITIES,
    describe_validation_error,
    entity_key,
    partition_key,
    validate_item,
)
from chalicelib.model.envelope import decode_envelope, encode_envelope
from chalicelib.observability.logging import logger
from chalicelib.runs.manifest import RunManifests
from chalicelib.stream.publisher import MAX_RECORDS_PER_CALL, KinesisPublisher, OutgoingRecord


def new_redrive_id() -> str:
    return f"redrive-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass
class RedriveReport:
    """What a redrive did, per entity and in total."""

    redrive_id: str
    dry_run: bool = False
    quarantine: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    still_invalid: list[str] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "redrive_id": self.redrive_id,
            "dry_run": self.dry_run,
            "quarantine": {entity: dict(counts) for entity, counts in self.quarantine.items()},
            "failures": dict(self.failures),
            "still_invalid": self.still_invalid[:50],
            "runs": sorted(self.runs),
        }


@dataclass(frozen=True)
class _Revalidated:
    record: OutgoingRecord
    key_parts: list[Any]
    updated_at: str


def revalidate(record: QuarantinedRecord, now: str) -> _Revalidated:
    """The stream record a quarantined one becomes today; raises ValueError with the reason."""
    if record.run_id == UNATTRIBUTED_RUN or record.entity not in ENTITIES:
        raise ValueError("no run or entity can be attributed to it")
    try:
        document = orjson.loads(record.payload)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"payload is not JSON: {error}") from error
    fetched_at = now
    if record.origin.startswith("ingest-"):
        raw = document  # the API item as served
    else:  # a stream envelope
        try:
            envelope = decode_envelope(record.payload)
            raw, fetched_at = envelope.item, envelope.fetched_at
        except ValueError:
            raw = document.get("item") if isinstance(document, dict) else None
    try:
        item = validate_item(record.entity, raw)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from error
    data = encode_envelope(
        entity=record.entity, run_id=record.run_id, fetched_at=fetched_at, item=item
    )
    outgoing = OutgoingRecord(partition_key(record.entity, item), data, record.entity)
    return _Revalidated(outgoing, list(entity_key(record.entity, item)), item["updated_at"])


class Redriver:
    """Re-publishes quarantined and given-up records into the stream."""

    def __init__(
        self,
        publisher: KinesisPublisher,
        quarantine: Quarantine,
        manifests: RunManifests,
        *,
        sqs: Any = None,
        kinesis: Any = None,
        failure_queue_url: str | None = None,
    ) -> None:
        self.publisher = publisher
        self.quarantine = quarantine
        self.manifests = manifests
        self.sqs = sqs
        self.kinesis = kinesis
        self.failure_queue_url = failure_queue_url

    # -- quarantine --------------------------------------------------------------------------

    def redrive_quarantine(
        self,
        report: RedriveReport,
        *,
        run_id: str | None = None,
        entity: str | None = None,
    ) -> None:
        """Re-validate every quarantined record (of a run, of an entity) and re-publish."""
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        waiting: list[tuple[QuarantinedRecord, _Revalidated]] = []
        for key in self.quarantine.keys(run_id):
            record = self.quarantine.get(key)
            if entity and record.entity != entity:
                continue
            counts = report.quarantine[record.entity]
            counts["examined"] += 1
            try:
                revalidated = revalidate(record, now)
            except ValueError as error:
                counts["still_invalid"] += 1
                report.still_invalid.append(f"{key}: {str(error)[:200]}")
                continue
            counts["republished"] += 1
            if report.dry_run:
                continue
            self.publisher.add(revalidated.record)
            waiting.append((record, revalidated))
            if len(waiting) >= MAX_RECORDS_PER_CALL:
                self._settle(waiting, report)
                waiting = []
        self._settle(waiting, report)

    def _settle(
        self, waiting: list[tuple[QuarantinedRecord, _Revalidated]], report: RedriveReport
    ) -> None:
        """Flush, then (only then) move the objects under `redriven/` and note the runs."""
        if not waiting:
            return
        self.publisher.flush()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        per_run: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for record, revalidated in waiting:
            self.quarantine.mark_redriven(
                record,
                key_parts=revalidated.key_parts,
                updated_at=revalidated.updated_at,
                redrive_id=report.redrive_id,
                redriven_at=now,
            )
            per_run[record.run_id][f"redriven.{record.entity}"] += 1
        for run_id, counts in per_run.items():
            self._reopen(run_id, counts, report)

    def _reopen(self, run_id: str, counts: dict[str, int], report: RedriveReport) -> None:
        """Count the redrive in the run's manifest and have the reconciler look again."""
        report.runs.add(run_id)
        if self.manifests.get(run_id) is None:
            return
        self.manifests.add_counts(run_id, counts)
        self.manifests.set_fields(
            run_id,
            {
                "status": "reconciling",
                "redriven_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "redrive_id": report.redrive_id,
            },
        )

    # -- on-failure queue --------------------------------------------------------------------

    def redrive_failures(self, report: RedriveReport, *, max_messages: int = 10_000) -> None:
        """Read each failed batch's range back from the stream and re-publish it."""
        if self.sqs is None or self.kinesis is None or not self.failure_queue_url:
            raise ValueError("redriving the on-failure queue needs SQS, Kinesis and the queue URL")
        seen = 0
        while seen < max_messages:
            response = self.sqs.receive_message(
                QueueUrl=self.failure_queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=300,
            )
            messages = response.get("Messages", [])
            if not messages:
                return
            for message in messages:
                seen += 1
                self._redrive_message(message, report)

    def _redrive_message(self, message: dict[str, Any], report: RedriveReport) -> None:
        report.failures["messages"] += 1
        try:
            failure = FailureRecord.from_json(message["Body"])
        except ValueError as error:
            report.failures["unreadable"] += 1
            logger.error("unreadable on-failure message", extra={"error": str(error)})
            return
        records = list(self._read_range(failure))
        complete = bool(records) and records[0]["SequenceNumber"] == (
            failure.batch.start_sequence_number
        )
        if not complete:
            report.failures["expired"] += 1
            logger.error(
                "failed batch no longer in the stream; records lost",
                extra={
                    "step": "redrive",
                    "shard": failure.batch.shard_id,
                    "start": failure.batch.start_sequence_number,
                    "end": failure.batch.end_sequence_number,
                },
            )
            return
        report.failures["records"] += len(records)
        if report.dry_run:
            return
        run_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for record in records:
            key = str(record["PartitionKey"])
            entity = key.split(":", 1)[0]
            self.publisher.add(OutgoingRecord(key, bytes(record["Data"]), entity))
            run_id = _run_id_of(bytes(record["Data"]))
            if run_id:
                run_counts[run_id][f"redriven.{entity}"] += 1
        self.publisher.flush()
        self.sqs.delete_message(
            QueueUrl=self.failure_queue_url, ReceiptHandle=message["ReceiptHandle"]
        )
        report.failures["republished"] += len(records)
        for run_id, counts in run_counts.items():
            self._reopen(run_id, counts, report)

    def _read_range(self, failure: FailureRecord) -> Iterator[dict[str, Any]]:
        """The records of the failed batch's range, while the stream still holds them."""
        batch = failure.batch
        iterator = self.kinesis.get_shard_iterator(
            StreamName=batch.stream_name,
            ShardId=batch.shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=batch.start_sequence_number,
        )["ShardIterator"]
        end = int(batch.end_sequence_number)
        while iterator:
            response = self.kinesis.get_records(ShardIterator=iterator, Limit=1000)
            records = response["Records"]
            for record in records:
                if int(record["SequenceNumber"]) > end:
                    return
                yield record
            if not records:
                return
            iterator = response.get("NextShardIterator")


def _run_id_of(data: bytes) -> str | None:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    run_id = document.get("run_id") if isinstance(document, dict) else None
    return run_id if isinstance(run_id, str) else None
