"""The parts of Lambda that moto does not run: the schedule and the Kinesis trigger.

`KinesisEventSourceMapping` polls every shard from `TRIM_HORIZON` in its own thread, hands
batches of at most `batch_size` records to the handler as the real Lambda Kinesis event, and
on a partial failure re-delivers from the lowest reported sequence number, as AWS does with
`ReportBatchItemFailures`. A handler exception re-delivers the whole batch. A batch that keeps
failing stops its shard after `max_retries` (the records stay in the stream) and the run fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localcloud.lambda_runtime import LambdaContext, kinesis_event

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class ShardProgress:
    shard_id: str
    invocations: int = 0
    records_delivered: int = 0
    redeliveries: int = 0
    handler_errors: int = 0
    stuck_at: str | None = None
    error: str | None = None


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
    idle_poll_s: float = 0.05
    progress: dict[str, ShardProgress] = field(default_factory=dict)
    positions: dict[str, str] = field(default_factory=dict)
    """Last sequence number handled per shard. Lambda keeps it between invocations, so a
    mapping given the previous run's positions resumes after them instead of re-reading the
    stream from TRIM_HORIZON."""

    def run(self, producer_done: threading.Event) -> dict[str, ShardProgress]:
        """Consume every shard until the producer is done and every shard is drained."""
        shards = self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]
        threads = []
        for shard in shards:
            shard_id = shard["ShardId"]
            self.progress[shard_id] = ShardProgress(shard_id)
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
            self.progress[shard_id].error = f"{type(error).__name__}: {error}"

    def _consume(self, shard_id: str, producer_done: threading.Event) -> None:
        progress = self.progress[shard_id]
        position = self.positions.get(shard_id)
        if position is None:
            iterator = self._iterator(shard_id, "TRIM_HORIZON")
        else:
            iterator = self._iterator(shard_id, "AFTER_SEQUENCE_NUMBER", position)
        attempts_at: dict[str, int] = {}
        while True:
            done_before_poll = producer_done.is_set()
            response = self.kinesis.get_records(ShardIterator=iterator, Limit=self.batch_size)
            records = response["Records"]
            if not records:
                if done_before_poll:
                    return
                time.sleep(self.idle_poll_s)
                iterator = response["NextShardIterator"]
                continue
            failed_from = self._invoke(records, shard_id, progress)
            if failed_from is None:
                self.positions[shard_id] = records[-1]["SequenceNumber"]
                iterator = response["NextShardIterator"]
                continue
            attempts = attempts_at.get(failed_from, 0) + 1
            attempts_at[failed_from] = attempts
            if attempts > self.max_retries:
                progress.stuck_at = failed_from
                return
            progress.redeliveries += 1
            iterator = self._iterator(shard_id, "AT_SEQUENCE_NUMBER", failed_from)

    def _invoke(
        self, records: list[dict[str, Any]], shard_id: str, progress: ShardProgress
    ) -> str | None:
        """Call the handler once; return the sequence number to re-deliver from, if any."""
        event = kinesis_event(
            records, shard_id=shard_id, stream_arn=self.stream_arn, region=self.region
        )
        progress.invocations += 1
        progress.records_delivered += len(records)
        sequences = [record["SequenceNumber"] for record in records]
        try:
            response = self.handler(event, LambdaContext(self.function_name, region=self.region))
        except Exception:
            progress.handler_errors += 1
            return sequences[0]
        failures = (response or {}).get("batchItemFailures") or []
        if not failures:
            return None
        identifiers = [failure.get("itemIdentifier") for failure in failures]
        if any(identifier not in sequences for identifier in identifiers):
            return sequences[0]  # an unknown identifier fails the whole batch, as in AWS
        return min(identifiers, key=lambda identifier: int(identifier))

    def _iterator(self, shard_id: str, kind: str, sequence: str | None = None) -> str:
        arguments: dict[str, Any] = {
            "StreamName": self.stream_name,
            "ShardId": shard_id,
            "ShardIteratorType": kind,
        }
        if sequence is not None:
            arguments["StartingSequenceNumber"] = sequence
        return str(self.kinesis.get_shard_iterator(**arguments)["ShardIterator"])
