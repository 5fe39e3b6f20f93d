"""The local event-source mapping honours the same failure settings as Lambda's.

Each test puts real records into a Kinesis stream of the session's moto server, reads them
back and hands them to the driver with a scripted handler, then checks what the handler saw
and what reached the on-failure queue (the JSON AWS sends).
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import orjson
import pytest

from chalicelib.deadletter.failures import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    FailureRecord,
)
from infra.trigger import KinesisEventSourceSettings
from localcloud.triggers.async_invoker import AsyncInvoker
from localcloud.triggers.kinesis import KinesisEventSourceMapping


class Stream:
    """A one-shard stream with `n` records and an SQS queue as on-failure destination."""

    def __init__(self, n: int) -> None:
        self.name = f"driver-{uuid.uuid4().hex[:8]}"
        self.kinesis = boto3.client("kinesis")
        self.sqs = boto3.client("sqs")
        self.kinesis.create_stream(StreamName=self.name, ShardCount=1)
        self.kinesis.get_waiter("stream_exists").wait(
            StreamName=self.name, WaiterConfig={"Delay": 1}
        )
        summary = self.kinesis.describe_stream_summary(StreamName=self.name)
        self.arn = summary["StreamDescriptionSummary"]["StreamARN"]
        self.kinesis.put_records(
            StreamName=self.name,
            Records=[{"Data": f"record-{i}".encode(), "PartitionKey": "k"} for i in range(n)],
        )
        self.shard_id = self.kinesis.list_shards(StreamName=self.name)["Shards"][0]["ShardId"]
        iterator = self.kinesis.get_shard_iterator(
            StreamName=self.name, ShardId=self.shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        self.records = self.kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]
        self.queue_url = self.sqs.create_queue(QueueName=f"{self.name}-failures")["QueueUrl"]

    def mapping(self, handler: Any, **settings: Any) -> KinesisEventSourceMapping:
        return KinesisEventSourceMapping(
            kinesis=self.kinesis,
            stream_name=self.name,
            stream_arn=self.arn,
            handler=handler,
            settings=KinesisEventSourceSettings(**settings),
            sqs=self.sqs,
            destination_url=self.queue_url,
        )

    def failures(self) -> list[FailureRecord]:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [FailureRecord.from_json(m["Body"]) for m in messages.get("Messages", [])]


class ScriptedHandler:
    """Records every batch it sees (as record indexes) and fails as told."""

    def __init__(self, poison: set[int] | None = None, mode: str = "raise") -> None:
        self.poison = poison or set()
        self.mode = mode
        self.batches: list[list[int]] = []
        self.done: list[int] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        indexes = [
            int(base64.b64decode(r["kinesis"]["data"]).decode().split("-")[1])
            for r in event["Records"]
        ]
        self.batches.append(indexes)
        bad = [i for i, index in enumerate(indexes) if index in self.poison]
        if not bad:
            self.done.extend(indexes)
            return {"batchItemFailures": []}
        if self.mode == "raise":
            raise RuntimeError("handler failed")
        self.done.extend(indexes[: bad[0]])
        sequence = event["Records"][bad[0]]["kinesis"]["sequenceNumber"]
        return {"batchItemFailures": [{"itemIdentifier": sequence}]}


@pytest.fixture
def stream(aws_env: str) -> Stream:
    return Stream(10)


def test_a_successful_batch_is_delivered_once(stream: Stream) -> None:
    handler = ScriptedHandler()
    stream.mapping(handler).deliver(stream.records, stream.shard_id)
    assert handler.batches == [list(range(10))]
    assert stream.failures() == []


def test_partial_failure_redelivers_from_the_lowest_reported_record(stream: Stream) -> None:
    handler = ScriptedHandler(poison={4}, mode="report")
    mapping = stream.mapping(handler, maximum_retry_attempts=2)
    mapping.deliver(stream.records, stream.shard_id)
    # first the whole batch, then twice from record 4 (the retry limit), then given up
    assert handler.batches == [list(range(10)), list(range(4, 10)), list(range(4, 10))]
    failures = stream.failures()
    assert len(failures) == 1
    assert failures[0].condition == RETRY_ATTEMPTS_EXHAUSTED
    assert failures[0].batch.start_sequence_number == stream.records[4]["SequenceNumber"]
    assert failures[0].batch.end_sequence_number == stream.records[9]["SequenceNumber"]
    assert failures[0].batch.batch_size == 6
    assert mapping.progress[stream.shard_id].discarded_records == 6


def test_bisect_isolates_the_record_that_makes_the_handler_fail(stream: Stream) -> None:
    handler = ScriptedHandler(poison={6}, mode="raise")
    mapping = stream.mapping(handler, bisect_batch_on_function_error=True, maximum_retry_attempts=1)
    mapping.deliver(stream.records, stream.shard_id)
    assert sorted(handler.done) == [i for i in range(10) if i != 6]
    assert [6] in handler.batches  # bisected down to the bad record alone
    assert handler.batches.count([6]) == 2  # the single record: first attempt + 1 retry
    failures = stream.failures()
    assert len(failures) == 1
    info = failures[0].batch
    assert info.start_sequence_number == info.end_sequence_number
    assert info.start_sequence_number == stream.records[6]["SequenceNumber"]
    assert failures[0].function_error == "Unhandled"
    # the records after the bad one were delivered after it, in order
    assert handler.done.index(7) > handler.done.index(5)


def test_without_bisect_the_whole_batch_is_retried_then_given_up(stream: Stream) -> None:
    handler = ScriptedHandler(poison={0}, mode="raise")
    mapping = stream.mapping(
        handler, bisect_batch_on_function_error=False, maximum_retry_attempts=3
    )
    mapping.deliver(stream.records, stream.shard_id)
    assert handler.batches == [list(range(10))] * 4
    failures = stream.failures()
    assert [f.batch.batch_size for f in failures] == [10]
    assert failures[0].approximate_invoke_count == 4


def test_records_older_than_the_maximum_age_are_not_delivered(stream: Stream) -> None:
    handler = ScriptedHandler()
    mapping = stream.mapping(handler, maximum_record_age_in_seconds=60)
    mapping.now = lambda: datetime.now(UTC) + timedelta(seconds=120)
    mapping.deliver(stream.records, stream.shard_id)
    assert handler.batches == []
    failures = stream.failures()
    assert [f.condition for f in failures] == [RECORD_AGE_EXCEEDED]
    assert failures[0].batch.batch_size == 10


def test_an_unknown_item_identifier_fails_the_whole_batch(stream: Stream) -> None:
    calls: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(len(event["Records"]))
        return {"batchItemFailures": [{"itemIdentifier": "not-a-sequence-number"}]}

    stream.mapping(handler, maximum_retry_attempts=1).deliver(stream.records, stream.shard_id)
    assert calls == [10, 10]


def test_the_failure_message_has_the_shape_aws_sends(stream: Stream) -> None:
    handler = ScriptedHandler(poison={0}, mode="raise")
    stream.mapping(handler, bisect_batch_on_function_error=False, maximum_retry_attempts=0).deliver(
        stream.records, stream.shard_id
    )
    body = stream.sqs.receive_message(QueueUrl=stream.queue_url)["Messages"][0]["Body"]
    document = orjson.loads(body)
    assert set(document) == {
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    }
    assert document["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert document["requestContext"]["functionArn"].endswith(":function:load")
    assert set(document["KinesisBatchInfo"]) == {
        "shardId",
        "startSequenceNumber",
        "endSequenceNumber",
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
        "batchSize",
        "streamArn",
    }
    assert document["KinesisBatchInfo"]["streamArn"] == stream.arn
    assert document["KinesisBatchInfo"]["approximateArrivalOfFirstRecord"].endswith("Z")


def test_async_invoker_retries_a_failed_invocation_twice(aws_env: str) -> None:
    attempts: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        attempts.append(event["id"])
        if len(attempts) < 3:
            raise RuntimeError("crashed")
        return {"ok": True}

    invoker = AsyncInvoker(handler=handler, lambda_client=boto3.client("lambda"))
    last = invoker.run({"id": "event-1"})
    assert last.result == {"ok": True}
    assert attempts == ["event-1"] * 3
    assert [record.retry_of for record in invoker.invocations] == [None, 1, 1]


def test_async_invoker_gives_up_after_the_retries(aws_env: str) -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("always")

    invoker = AsyncInvoker(handler=handler, lambda_client=boto3.client("lambda"))
    last = invoker.run({"id": "e"})
    assert last.error == "RuntimeError: always"
    assert len(invoker.invocations) == 3


def test_async_invoker_runs_the_invocations_a_function_asks_for(aws_env: str) -> None:
    client = boto3.client("lambda")
    seen: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event["n"])
        if event["n"] < 3:
            client.invoke(
                FunctionName=context.invoked_function_arn,
                InvocationType="Event",
                Payload=orjson.dumps({"n": event["n"] + 1}),
            )
        return {"n": event["n"]}

    last = AsyncInvoker(handler=handler, lambda_client=client).run({"n": 1})
    assert seen == [1, 2, 3]
    assert last.result == {"n": 3}
