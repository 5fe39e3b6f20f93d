"""The local event-source mapping against a moto stream: the Lambda Kinesis event it builds.

The load handler is written for what AWS sends; the driver must send exactly that (base64
data, real sequence numbers, the stream ARN, `eventID` "<shard>:<sequence>"), honour the batch
size and drain every shard. Its failure semantics (partial re-delivery, bisect, retry limit,
on-failure destination) are tested in test_driver.py.
"""

from __future__ import annotations

import base64
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.aws import clients as aws
from infra.trigger import KinesisEventSourceSettings
from localcloud.triggers.kinesis import KinesisEventSourceMapping
from localcloud.triggers.lambda_runtime import Handler, LambdaContext
from tests.helpers.factories import create_stream, unique_name


@dataclass
class Stream:
    name: str
    arn: str
    # (shard id, sequence number, partition key, data) of every record put, in put order
    records: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    def put(self, count: int, start: int = 0) -> None:
        kinesis = aws.client("kinesis")
        for offset in range(0, count, 500):
            batch = [
                (f"key-{n}", f'{{"n": {n}}}'.encode())
                for n in range(start + offset, start + min(offset + 500, count))
            ]
            response = kinesis.put_records(
                StreamName=self.name,
                Records=[{"PartitionKey": key, "Data": data} for key, data in batch],
            )
            assert response["FailedRecordCount"] == 0
            for (key, data), result in zip(batch, response["Records"], strict=True):
                self.records.append((result["ShardId"], result["SequenceNumber"], key, data))

    def pairs(self) -> set[tuple[str, str]]:
        """(shard, sequence) of every record: moto numbers each shard from 1, so a sequence
        number alone is not unique in a stream."""
        return {(shard, sequence) for shard, sequence, _, _ in self.records}

    def by_shard(self) -> dict[str, list[str]]:
        shards: dict[str, list[str]] = defaultdict(list)
        for shard, sequence, _, _ in self.records:
            shards[shard].append(sequence)
        return dict(shards)


@pytest.fixture
def stream(aws_env: str) -> Iterator[Stream]:
    name = unique_name("esm")
    arn = create_stream(name)
    yield Stream(name, arn)
    aws.client("kinesis").delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@dataclass
class Recorder:
    """A handler that records every event; `decide(event)` returns its response or raises."""

    decide: Callable[[dict[str, Any]], Any] = lambda event: {"batchItemFailures": []}
    events: list[dict[str, Any]] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self.lock:
            self.events.append(event)
            self.contexts.append(context)
        return self.decide(event)

    def sequences(self, shard: str | None = None) -> list[list[str]]:
        """The sequence numbers of each invocation (of one shard), in call order."""
        return [
            [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
            for event in self.events
            if shard is None or event["Records"][0]["eventID"].startswith(f"{shard}:")
        ]

    def pairs(self) -> list[tuple[str, str]]:
        """(shard, sequence) of every record delivered, repeats included."""
        return [
            (r["eventID"].split(":")[0], r["kinesis"]["sequenceNumber"])
            for event in self.events
            for r in event["Records"]
        ]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def mapping_of(
    stream: Stream, handler: Handler, kinesis: Any = None, **options: Any
) -> KinesisEventSourceMapping:
    """The mapping of `stream` to `handler` (through `kinesis`, the real client by default),
    polling an idle shard every 10 ms."""
    return KinesisEventSourceMapping(
        kinesis=kinesis or aws.client("kinesis"),
        stream_name=stream.name,
        stream_arn=stream.arn,
        handler=handler,
        idle_poll_s=0.01,
        **options,
    )


def drive(stream: Stream, handler: Handler, **options: Any) -> KinesisEventSourceMapping:
    """Drain what is in the stream now (the producer is done)."""
    mapping = mapping_of(stream, handler, **options)
    done = threading.Event()
    done.set()
    mapping.run(done)
    return mapping


def drive_while(
    mapping: KinesisEventSourceMapping, publish: Callable[[], None], timeout_s: float
) -> None:
    """Run the mapping while `publish` puts records, until it drained them (or `timeout_s`)."""
    done = threading.Event()
    consumer = threading.Thread(target=mapping.run, args=(done,), daemon=True)
    consumer.start()
    publish()
    done.set()
    consumer.join(timeout=timeout_s)
    assert not consumer.is_alive()


def test_builds_the_lambda_kinesis_event(stream: Stream, recorder: Recorder) -> None:
    stream.put(40)
    drive(stream, recorder, batch_size=100, function_name="load-fn", region="us-east-1")

    put = {(shard, sequence): (key, data) for shard, sequence, key, data in stream.records}
    seen = set()
    for event in recorder.events:
        assert set(event) == {"Records"}
        shards = {r["eventID"].split(":")[0] for r in event["Records"]}
        assert len(shards) == 1  # one invocation reads one shard
        for record in event["Records"]:
            sequence = record["kinesis"]["sequenceNumber"]
            shard = record["eventID"].removesuffix(f":{sequence}")
            assert shard.startswith("shardId-")
            key, data = put[(shard, sequence)]
            assert record["eventSourceARN"] == stream.arn
            assert record["eventSource"] == "aws:kinesis"
            assert record["eventName"] == "aws:kinesis:record"
            assert record["eventVersion"] == "1.0"
            assert record["awsRegion"] == "us-east-1"
            assert record["invokeIdentityArn"].startswith("arn:aws:iam::")
            assert record["kinesis"]["partitionKey"] == key
            assert record["kinesis"]["kinesisSchemaVersion"] == "1.0"
            assert base64.b64decode(record["kinesis"]["data"], validate=True) == data
            assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)
            seen.add((shard, sequence))
    assert seen == set(put)
    context = recorder.contexts[0]
    assert isinstance(context, LambdaContext)
    assert context.function_name == "load-fn"
    assert context.invoked_function_arn.endswith(":function:load-fn")
    assert context.get_remaining_time_in_millis() > 0


def test_honours_batch_size_and_drains_every_shard_in_order(
    stream: Stream, recorder: Recorder
) -> None:
    stream.put(230)
    mapping = drive(stream, recorder, batch_size=7)

    assert all(1 <= len(batch) <= 7 for batch in recorder.sequences())
    expected = stream.by_shard()
    assert len(expected) == 2  # the keys spread over both shards
    for shard, sequences in expected.items():
        delivered = [s for batch in recorder.sequences(shard) for s in batch]
        assert delivered == sequences  # every record once, in shard order
        assert mapping.progress[shard].records_delivered == len(sequences)
        assert mapping.progress[shard].redeliveries == 0
        assert mapping.progress[shard].stuck_at is None


def test_consumes_while_the_producer_is_still_publishing(
    stream: Stream, recorder: Recorder
) -> None:
    def publish() -> None:
        for start in range(0, 300, 100):
            stream.put(100, start=start)

    drive_while(mapping_of(stream, recorder, batch_size=50), publish, timeout_s=60)

    assert sorted(recorder.pairs()) == sorted(stream.pairs())  # each exactly once


def test_unknown_item_identifier_redelivers_the_whole_batch(stream: Stream) -> None:
    stream.put(20)
    answers = [{"batchItemFailures": [{"itemIdentifier": "12345"}]}]

    def decide(event: dict[str, Any]) -> Any:
        return answers.pop() if answers else {}

    recorder = Recorder(decide)
    drive(stream, recorder, batch_size=4)
    first = recorder.events[0]["Records"][0]["eventID"].split(":")[0]
    batches = recorder.sequences(first)
    assert batches[0] == batches[1]


def test_broken_poller_is_reported_not_hung(stream: Stream, recorder: Recorder) -> None:
    class BrokenKinesis:
        """The real client, except that GetRecords fails (e.g. expired credentials)."""

        def __getattr__(self, name: str) -> Any:
            if name == "get_records":
                raise RuntimeError("GetRecords is broken")
            return getattr(aws.client("kinesis"), name)

    stream.put(5)
    progress = drive(stream, recorder, kinesis=BrokenKinesis()).progress
    assert len(progress) == 2
    assert all("GetRecords is broken" in (p.error or "") for p in progress.values())
    assert recorder.events == []


def test_the_batching_window_gathers_records_until_the_batch_is_full(
    stream: Stream, recorder: Recorder
) -> None:
    """`MaximumBatchingWindowInSeconds` as deployed: while the producer publishes, a shard's
    records wait for a full batch (or the window's end, a minute here) before one invocation."""
    mapping = mapping_of(
        stream,
        recorder,
        settings=KinesisEventSourceSettings(batch_size=1000, maximum_batching_window_in_seconds=60),
    )

    def publish() -> None:
        for start in range(0, 40, 10):
            stream.put(10, start=start)

    drive_while(mapping, publish, timeout_s=120)

    assert sorted(recorder.pairs()) == sorted(stream.pairs())
    # one invocation per shard: nothing was delivered before the producer was done
    assert len(recorder.events) == len(stream.by_shard()) == 2
