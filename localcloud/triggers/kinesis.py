"""The part of Lambda that moto does not run for a Kinesis trigger: its event-source mapping.

`KinesisEventSourceMapping` polls every shard from its `StartingPosition` in its own thread and
hands batches of at most `BatchSize` records (gathered for up to `MaximumBatchingWindowInSeconds`
while the producer runs) to the load handler as the real Lambda Kinesis event,
with the failure semantics of the mapping's settings (`infra.trigger`), as AWS applies
them:

- `ReportBatchItemFailures`: the batch is retried from the lowest reported sequence number; an
  identifier that is not in the batch fails the whole batch;
- `BisectBatchOnFunctionError`: when the handler raises, the batch is split in two halves that
  are retried in order; splitting does not consume the retry quota;
- `MaximumRetryAttempts` (-1: forever) bounds the retries of a batch (or of a half);
- `MaximumRecordAgeInSeconds` (-1: forever): records older than this are not delivered again;
- records given up on are described in the on-failure destination (an SQS queue) with the JSON
  AWS sends, then the shard moves on. Those records are lost until redriven, so the run that
  produced them does not reconcile.

"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.deadletter.failures import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    FailureRecord,
    batch_info,
    now_iso,
)
from infra.trigger import KinesisEventSourceSettings
from localcloud.triggers.lambda_runtime import Handler, LambdaContext, kinesis_event

log = logging.getLogger(__name__)


@dataclass
class ShardProgress:
    shard_id: str
    invocations: int = 0
    records_delivered: int = 0
    redeliveries: int = 0
    handler_errors: int = 0
    bisections: int = 0
    discarded_records: int = 0
    failure_messages: int = 0
    stuck_at: str | None = None
    """First sequence number of the records given up on (sent to the on-failure destination)."""
    error: str | None = None
    last_sequence: str | None = None
    """The mapping's position: a later `run()` continues after it (the mapping's checkpoint)."""


@dataclass
class _Outcome:
    """What one invocation asks of the mapping."""

    retry_from: int | None = None
    """Index in the batch to retry from; None when the batch succeeded."""
    function_error: bool = False


@dataclass
class KinesisEventSourceMapping:
    """Drives a load handler from a Kinesis stream like Lambda's event-source mapping."""

    kinesis: Any
    stream_name: str
    stream_arn: str
    handler: Handler
    function_name: str = "load"
    region: str = "us-east-1"
    batch_size: int = 100
    max_retries: int = 10
    settings: KinesisEventSourceSettings | None = None
    """The mapping's settings; None builds them from `batch_size` and `max_retries`."""
    sqs: Any = None
    """Client for the on-failure destination, when `settings` names one."""
    destination_url: str | None = None
    idle_poll_s: float = 0.05
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    progress: dict[str, ShardProgress] = field(default_factory=dict)
    memory_mb: int = 512
    timeout_s: float = 120.0
    """The deployed function's memory and timeout (its Lambda context says them)."""

    def __post_init__(self) -> None:
        if self.settings is None:
            self.settings = KinesisEventSourceSettings(
                batch_size=self.batch_size, maximum_retry_attempts=self.max_retries
            )

    @property
    def config(self) -> KinesisEventSourceSettings:
        assert self.settings is not None
        return self.settings

    @property
    def function_arn(self) -> str:
        return LambdaContext(self.function_name, region=self.region).invoked_function_arn

    def run(self, producer_done: threading.Event) -> dict[str, ShardProgress]:
        """Consume every shard until the producer is done and every shard is drained."""
        shards = self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]
        threads = []
        for shard in shards:
            shard_id = shard["ShardId"]
            self.progress.setdefault(shard_id, ShardProgress(shard_id))
            thread = threading.Thread(
                target=self._consume_safely,
                args=(shard_id, producer_done),
                name=f"esm-{shard_id}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        return self.progress

    def _consume_safely(self, shard_id: str, producer_done: threading.Event) -> None:
        try:
            self._consume(shard_id, producer_done)
        except Exception as error:  # a broken poller must fail the run, not hang it
            log.exception("shard poller %s failed", shard_id)
            self.progress[shard_id].error = f"{type(error).__name__}: {error}"

    def _consume(self, shard_id: str, producer_done: threading.Event) -> None:
        position = self.progress[shard_id].last_sequence
        iterator = (
            self._iterator(shard_id, "AFTER_SEQUENCE_NUMBER", position)
            if position
            else self._iterator(shard_id, self.config.starting_position)
        )
        while True:
            done_before_poll = producer_done.is_set()
            response = self.kinesis.get_records(
                ShardIterator=iterator, Limit=self.config.batch_size
            )
            records = response["Records"]
            iterator = response["NextShardIterator"]
            if not records:
                if done_before_poll:
                    return
                time.sleep(self.idle_poll_s)
                continue
            iterator = self._fill_window(shard_id, records, iterator, producer_done)
            self.deliver(records, shard_id)
            self.progress[shard_id].last_sequence = records[-1]["SequenceNumber"]

    def _fill_window(
        self,
        shard_id: str,
        records: list[dict[str, Any]],
        iterator: str,
        producer_done: threading.Event,
    ) -> str:
        """`MaximumBatchingWindowInSeconds`: gather records until the batch is full or the
        window has passed. Once the producer is done the wait is cut short (AWS would wait
        the rest of the window for records that cannot come any more), after one last read
        to the shard's tip, so everything published before then is in this batch."""
        window_s = self.config.maximum_batching_window_in_seconds
        deadline = time.monotonic() + window_s
        while len(records) < self.config.batch_size and time.monotonic() < deadline:
            done = producer_done.is_set()
            if not done:
                time.sleep(self.idle_poll_s)
            response = self.kinesis.get_records(
                ShardIterator=iterator, Limit=self.config.batch_size - len(records)
            )
            records.extend(response["Records"])
            iterator = response["NextShardIterator"]
            if done and not response["Records"]:
                break  # drained what the producer published before it finished
        return str(iterator)

    def deliver(self, records: list[dict[str, Any]], shard_id: str) -> None:
        """Hand one polled batch to the handler until it is processed or given up on."""
        progress = self.progress.setdefault(shard_id, ShardProgress(shard_id))
        config = self.config
        work: deque[tuple[list[dict[str, Any]], int]] = deque([(records, 0)])
        while work:
            batch, retries = work.popleft()
            batch = self._without_expired(batch, shard_id, progress, retries)
            if not batch:
                continue
            outcome = self._invoke(batch, shard_id, progress)
            if outcome.retry_from is None:
                continue
            if outcome.function_error and config.bisect_batch_on_function_error and len(batch) > 1:
                middle = len(batch) // 2
                progress.bisections += 1
                work.appendleft((batch[middle:], retries))
                work.appendleft((batch[:middle], retries))
                continue
            remaining = batch[outcome.retry_from :]
            if 0 <= config.maximum_retry_attempts <= retries:
                self._give_up(
                    remaining,
                    shard_id,
                    progress,
                    RETRY_ATTEMPTS_EXHAUSTED,
                    invoke_count=retries + 1,
                    function_error=outcome.function_error,
                )
                continue
            progress.redeliveries += 1
            work.appendleft((remaining, retries + 1))

    def _without_expired(
        self, batch: list[dict[str, Any]], shard_id: str, progress: ShardProgress, retries: int
    ) -> list[dict[str, Any]]:
        """Give up on the records older than `MaximumRecordAgeInSeconds` (a prefix: they arrive
        in order) before delivering the rest."""
        max_age = self.config.maximum_record_age_in_seconds
        if max_age < 0:
            return batch
        now = self.now()
        expired = 0
        for record in batch:
            arrival: datetime = record["ApproximateArrivalTimestamp"]
            if (now - arrival).total_seconds() <= max_age:
                break
            expired += 1
        if expired:
            self._give_up(
                batch[:expired],
                shard_id,
                progress,
                RECORD_AGE_EXCEEDED,
                invoke_count=retries,
                function_error=False,
            )
        return batch[expired:]

    def _invoke(
        self, records: list[dict[str, Any]], shard_id: str, progress: ShardProgress
    ) -> _Outcome:
        """Call the handler once and read its answer."""
        event = kinesis_event(
            records, shard_id=shard_id, stream_arn=self.stream_arn, region=self.region
        )
        progress.invocations += 1
        progress.records_delivered += len(records)
        try:
            context = LambdaContext(
                self.function_name,
                memory_limit_in_mb=self.memory_mb,
                timeout_s=self.timeout_s,
                region=self.region,
            )
            response = self.handler(event, context)
        except Exception as error:
            progress.handler_errors += 1
            log.info("load handler raised %s: %s", type(error).__name__, error)
            return _Outcome(retry_from=0, function_error=True)
        if not self.config.reports_batch_item_failures:
            return _Outcome()
        failures = (response or {}).get("batchItemFailures") or []
        if not failures:
            return _Outcome()
        sequences = [record["SequenceNumber"] for record in records]
        identifiers = [failure.get("itemIdentifier") for failure in failures]
        if any(identifier not in sequences for identifier in identifiers):
            return _Outcome(retry_from=0)  # an unknown identifier fails the whole batch
        lowest = min(identifiers, key=lambda identifier: int(identifier))
        return _Outcome(retry_from=sequences.index(lowest))

    def _give_up(
        self,
        records: list[dict[str, Any]],
        shard_id: str,
        progress: ShardProgress,
        condition: str,
        *,
        invoke_count: int,
        function_error: bool,
    ) -> None:
        """Skip `records`, describing them in the on-failure destination."""
        progress.discarded_records += len(records)
        if progress.stuck_at is None:
            progress.stuck_at = records[0]["SequenceNumber"]
        event_records = kinesis_event(
            records, shard_id=shard_id, stream_arn=self.stream_arn, region=self.region
        )["Records"]
        message = FailureRecord(
            condition=condition,
            batch=batch_info(event_records, shard_id=shard_id, stream_arn=self.stream_arn),
            function_arn=self.function_arn,
            approximate_invoke_count=invoke_count,
            timestamp=now_iso(),
            function_error="Unhandled" if function_error else None,
        )
        log.warning("gave up on %d records of %s (%s)", len(records), shard_id, condition)
        if self.sqs is not None and self.destination_url:
            self.sqs.send_message(
                QueueUrl=self.destination_url, MessageBody=message.to_json().decode()
            )
            progress.failure_messages += 1

    def _iterator(self, shard_id: str, kind: str, sequence: str | None = None) -> str:
        arguments: dict[str, Any] = {
            "StreamName": self.stream_name,
            "ShardId": shard_id,
            "ShardIteratorType": kind,
        }
        if sequence is not None:
            arguments["StartingSequenceNumber"] = sequence
        return str(self.kinesis.get_shard_iterator(**arguments)["ShardIterator"])
