"""Kinesis publishing: envelopes batched into PutRecords calls, only failed records retried.

Publishing batches records across API pages up to the PutRecords limits (500 records, 5 MiB
per call), so a run makes as few calls as the limits allow, while the buffer never holds more
than one call's worth: memory stays flat whatever the size of the source. Only the records that
failed are retried, with exponential backoff and jitter.

With `background=True` a full call is sent by a helper thread while the caller goes on
preparing the next one (one call in flight at most, so records keep their order); `flush()`
waits for it, and a failure surfaces at the next `add()` or `flush()`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

MAX_RECORDS_PER_CALL: Final = 500
MAX_BYTES_PER_CALL: Final = 5 * 1024 * 1024
THROTTLING_ERRORS: Final = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "LimitExceededException"}
)
"""Errors of a whole PutRecords call that the publisher retries like failed records."""
MAX_BYTES_PER_RECORD: Final = 1024 * 1024
"""Kinesis counts the partition key and the data blob against the 1 MiB record limit."""


class PublishError(RuntimeError):
    """Records could not be published after every attempt; the run must not succeed."""


class RecordTooLarge(ValueError):
    """The record can never fit in Kinesis; the caller quarantines it."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    partition_key: str
    data: bytes
    entity: str

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode())


@dataclass
class PublishStats:
    """What one publisher did; the ingest manifest and the metrics read it."""

    calls: int = 0
    records: int = 0
    bytes: int = 0
    failed_attempts: int = 0
    published_by_entity: dict[str, int] = field(default_factory=dict)
    failed_by_entity: dict[str, int] = field(default_factory=dict)
    """Records rejected by a PutRecords call (then retried), per entity."""


@dataclass
class KinesisPublisher:
    """Buffers records and sends them with PutRecords, retrying only the failed ones."""

    client: KinesisClient
    stream_name: str
    max_attempts: int = 8
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    stats: PublishStats = field(default_factory=PublishStats)
    background: bool = False
    _buffer: list[OutgoingRecord] = field(default_factory=list)
    _buffer_bytes: int = 0
    _in_flight: Future[None] | None = None
    _sender: ThreadPoolExecutor | None = None

    def add(self, record: OutgoingRecord) -> None:
        """Queue a record; sends a full call's worth as soon as the limits are reached."""
        if record.size > MAX_BYTES_PER_RECORD:
            raise RecordTooLarge(
                f"record {record.partition_key} is {record.size} bytes, "
                f"Kinesis accepts at most {MAX_BYTES_PER_RECORD}"
            )
        if (
            len(self._buffer) >= MAX_RECORDS_PER_CALL
            or self._buffer_bytes + record.size > MAX_BYTES_PER_CALL
        ):
            self._send(self._take())
        self._buffer.append(record)
        self._buffer_bytes += record.size

    def flush(self) -> None:
        """Send everything buffered and wait for it; raises `PublishError` if some records
        never got in."""
        if self._buffer:
            self._send(self._take())
        self._wait()

    def close(self) -> None:
        """Stop the sender thread (after `flush`); the publisher can still send in the caller."""
        self._wait()
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    def _take(self) -> list[OutgoingRecord]:
        batch, self._buffer, self._buffer_bytes = self._buffer, [], 0
        return batch

    def _send(self, batch: list[OutgoingRecord]) -> None:
        if not self.background:
            self._put_with_retries(batch)
            return
        self._wait()  # one call in flight at most: records keep their order
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="put-records")
        self._in_flight = self._sender.submit(self._put_with_retries, batch)

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()  # re-raises PublishError

    def _put_with_retries(self, batch: Sequence[OutgoingRecord]) -> None:
        pending = list(batch)
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(self._backoff(attempt))
            pending = self._put_once(pending)
            if not pending:
                return
            self.stats.failed_attempts += len(pending)
            failed = self.stats.failed_by_entity
            for record in pending:
                failed[record.entity] = failed.get(record.entity, 0) + 1
        raise PublishError(
            f"{len(pending)} records still failing after {self.max_attempts} PutRecords "
            f"attempts to stream {self.stream_name}, first key {pending[0].partition_key}"
        )

    def _put_once(self, batch: Sequence[OutgoingRecord]) -> list[OutgoingRecord]:
        """One PutRecords call; returns the records that failed and must be retried.

        A whole-call error is left after botocore's own retries of throttling and transient
        errors (standard mode), so it will not heal here: it becomes a `PublishError`, which
        the ingest records as a failed resource instead of aborting the whole run.
        """
        try:
            response = self.client.put_records(
                StreamName=self.stream_name,
                Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in batch],
            )
        except ClientError as error:
            if error.response["Error"]["Code"] in THROTTLING_ERRORS:
                return list(batch)  # still throttled after botocore's retries: back off, resend
            raise PublishError(
                f"PutRecords of {len(batch)} records to stream {self.stream_name} failed: {error}"
            ) from error
        except BotoCoreError as error:
            raise PublishError(
                f"PutRecords of {len(batch)} records to stream {self.stream_name} failed: {error}"
            ) from error
        self.stats.calls += 1
        failed: list[OutgoingRecord] = []
        for record, result in zip(batch, response["Records"], strict=True):
            if "ErrorCode" in result:
                failed.append(record)
                continue
            self.stats.records += 1
            self.stats.bytes += record.size
            counts = self.stats.published_by_entity
            counts[record.entity] = counts.get(record.entity, 0) + 1
        return failed

    def _backoff(self, attempt: int) -> float:
        """Full jitter: spreads retries of concurrent producers apart."""
        ceiling = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
