"""The Kinesis producer: PutRecords limits, per-record retries, counts, envelope encoding.

Against moto (one stream per test) for what Kinesis really accepts, and against a stub client
for properties that need many examples or failures moto never produces. Kinesis answers a
partial failure with 200 and per-record `ErrorCode`s; botocore's event system lets a test turn
a real moto answer into one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.aws import clients as aws
from chalicelib.model.contract import partition_key
from chalicelib.model.envelope import decode_envelope, encode_envelope
from chalicelib.stream.publisher import (
    MAX_BYTES_PER_CALL,
    MAX_BYTES_PER_RECORD,
    MAX_RECORDS_PER_CALL,
    KinesisPublisher,
    OutgoingRecord,
    PublishError,
    RecordTooLarge,
)
from tests.helpers.factories import create_stream, item_for, unique_name, user

THROTTLED = {
    "ErrorCode": "ProvisionedThroughputExceededException",
    "ErrorMessage": "Rate exceeded for shard shardId-000000000000 in stream s.",
}


def record(entity: str = "users", index: int = 0, data_size: int | None = None) -> OutgoingRecord:
    """A record with a unique key; `data_size` pads the data to exactly that many bytes."""
    item = item_for(entity, **({"user_id": index} if entity == "listen_history" else {"id": index}))
    data = encode_envelope(entity=entity, run_id="run", fetched_at="now", item=item)
    if data_size is not None:
        data = data[:data_size].ljust(data_size, b" ")
    return OutgoingRecord(partition_key=partition_key(entity, item), data=data, entity=entity)


def sized(index: int, total_size: int) -> OutgoingRecord:
    """A record whose data + partition key is exactly `total_size` bytes."""
    key = f"users:{index}"
    return OutgoingRecord(partition_key=key, data=b"x" * (total_size - len(key)), entity="users")


# --- a stub Kinesis -------------------------------------------------------------------------


@dataclass
class StubKinesis:
    """Enforces the PutRecords limits like Kinesis; `fail(call, index)` decides failures."""

    fail: Callable[[int, int], bool] = lambda call, index: False
    calls: list[list[dict[str, Any]]] = field(default_factory=list)
    accepted: list[tuple[str, bytes]] = field(default_factory=list)

    def put_records(self, **arguments: Any) -> dict[str, Any]:
        Records: list[dict[str, Any]] = arguments["Records"]  # noqa: N806 - the API's name
        sizes = [len(r["Data"]) + len(r["PartitionKey"].encode()) for r in Records]
        assert 1 <= len(Records) <= MAX_RECORDS_PER_CALL
        assert sum(sizes) <= MAX_BYTES_PER_CALL
        assert max(sizes) <= MAX_BYTES_PER_RECORD
        call = len(self.calls)
        self.calls.append(Records)
        results: list[dict[str, Any]] = []
        for index, sent in enumerate(Records):
            if self.fail(call, index):
                results.append(dict(THROTTLED))
            else:
                self.accepted.append((sent["PartitionKey"], sent["Data"]))
                results.append({"SequenceNumber": str(len(self.accepted)), "ShardId": "s-0"})
        failed = sum("ErrorCode" in r for r in results)
        return {"FailedRecordCount": failed, "Records": results}


def publisher_for(client: Any, **options: Any) -> tuple[KinesisPublisher, list[float]]:
    sleeps: list[float] = []
    publisher = KinesisPublisher(
        client=client, stream_name="s", sleep=sleeps.append, **{"backoff_s": 0.01, **options}
    )
    return publisher, sleeps


# --- moto -----------------------------------------------------------------------------------


@pytest.fixture
def stream(aws_env: str) -> Iterator[str]:
    name = unique_name("stream")
    create_stream(name)
    yield name
    aws.client("kinesis").delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def read_stream(name: str) -> list[dict[str, Any]]:
    """Every record of every shard, from the start."""
    kinesis = aws.client("kinesis")
    records: list[dict[str, Any]] = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while True:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if not response["Records"]:
                break
            records.extend(response["Records"])
            iterator = response["NextShardIterator"]
    return records


@dataclass
class CallLog:
    """What each PutRecords call sent, seen through botocore's `provide-client-params` event."""

    calls: list[list[dict[str, Any]]] = field(default_factory=list)

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(list(params["Records"]))


def log_calls(client: Any) -> CallLog:
    log = CallLog()
    client.meta.events.register("provide-client-params.kinesis.PutRecords", log)
    return log


def moto_publisher(stream: str, **options: Any) -> tuple[KinesisPublisher, CallLog]:
    client = aws.client("kinesis")
    publisher = KinesisPublisher(client=client, stream_name=stream, sleep=lambda _: None, **options)
    return publisher, log_calls(client)


def test_batches_never_exceed_500_records(stream: str) -> None:
    publisher, log = moto_publisher(stream)
    for index in range(1201):
        publisher.add(record("users", index))
    publisher.flush()

    assert [len(call) for call in log.calls] == [500, 500, 201]
    stored = read_stream(stream)
    assert len(stored) == 1201
    assert {r["PartitionKey"] for r in stored} == {f"users:{i}" for i in range(1201)}
    assert publisher.stats.calls == 3
    assert publisher.stats.records == 1201
    assert publisher.stats.published_by_entity == {"users": 1201}


def test_batches_never_exceed_5_mib(stream: str) -> None:
    publisher, log = moto_publisher(stream)
    size = 900 * 1024
    for index in range(13):
        publisher.add(sized(index, size))
    publisher.flush()

    per_call = [sum(len(r["Data"]) + len(r["PartitionKey"]) for r in c) for c in log.calls]
    assert all(total <= MAX_BYTES_PER_CALL for total in per_call)
    assert [len(call) for call in log.calls] == [5, 5, 3]  # 6 x 900 KiB > 5 MiB
    assert publisher.stats.bytes == 13 * size
    stored = read_stream(stream)
    assert sorted(len(r["Data"]) + len(r["PartitionKey"]) for r in stored) == [size] * 13


def test_record_of_exactly_1_mib_is_accepted_and_one_byte_more_is_not(stream: str) -> None:
    publisher, log = moto_publisher(stream)
    publisher.add(sized(1, MAX_BYTES_PER_RECORD))
    with pytest.raises(RecordTooLarge, match=r"users:2 is 1048577 bytes"):
        publisher.add(sized(2, MAX_BYTES_PER_RECORD + 1))
    publisher.flush()

    assert [len(call) for call in log.calls] == [1]  # the rejected one was never buffered
    assert [r["PartitionKey"] for r in read_stream(stream)] == ["users:1"]


def test_partition_key_counts_against_the_record_limit() -> None:
    key = "listen_history:1:" + "2025-07-13T01:47:15.825923"
    too_big = OutgoingRecord(key, b"x" * (MAX_BYTES_PER_RECORD - len(key) + 1), "listen_history")
    publisher, _ = publisher_for(StubKinesis())
    with pytest.raises(RecordTooLarge):
        publisher.add(too_big)


def test_only_failed_records_are_retried(stream: str) -> None:
    client = aws.client("kinesis")
    log = log_calls(client)
    marked: list[list[str]] = []

    def fail_some(parsed: dict[str, Any], **_: Any) -> None:
        """Turn moto's answer to the first call into a partial failure of every 3rd record."""
        if marked:
            return
        failed = []
        for index, result in enumerate(parsed["Records"]):
            if index % 3 == 0:
                result.clear()
                result.update(THROTTLED)
                failed.append(log.calls[-1][index]["PartitionKey"])
        parsed["FailedRecordCount"] = len(failed)
        marked.append(failed)

    client.meta.events.register("after-call.kinesis.PutRecords", fail_some)
    sleeps: list[float] = []
    publisher = KinesisPublisher(client=client, stream_name=stream, sleep=sleeps.append)
    for index in range(30):
        publisher.add(record("users", index))
    publisher.flush()

    assert len(log.calls) == 2
    assert [r["PartitionKey"] for r in log.calls[1]] == marked[0]
    assert len(marked[0]) == 10
    assert len(sleeps) == 1
    assert publisher.stats.records == 30
    assert publisher.stats.failed_attempts == 10
    assert publisher.stats.published_by_entity == {"users": 30}
    # Kinesis stored the "failed" ones too (moto did accept them): at least once, never lost.
    keys = [r["PartitionKey"] for r in read_stream(stream)]
    assert set(keys) == {f"users:{i}" for i in range(30)}


def test_stream_that_does_not_exist_is_a_publish_error(aws_env: str) -> None:
    publisher = KinesisPublisher(client=aws.client("kinesis"), stream_name=unique_name("nope"))
    publisher.add(record())
    with pytest.raises(PublishError, match="nope"):
        publisher.flush()
    assert publisher.stats.records == 0


# --- stub: failures and properties ----------------------------------------------------------


def test_publish_error_after_max_attempts() -> None:
    stub = StubKinesis(fail=lambda call, index: index == 0)  # the first record never gets in
    publisher, sleeps = publisher_for(stub, max_attempts=4, max_backoff_s=0.05)
    for index in range(3):
        publisher.add(record("tracks", index))

    with pytest.raises(PublishError, match=r"1 records still failing after 4 .* tracks:0"):
        publisher.flush()

    assert [len(call) for call in stub.calls] == [3, 1, 1, 1]
    assert all(call[0]["PartitionKey"] == "tracks:0" for call in stub.calls[1:])
    assert len(sleeps) == 3
    assert all(0 <= s <= 0.05 for s in sleeps)
    assert publisher.stats.records == 2
    assert publisher.stats.published_by_entity == {"tracks": 2}
    assert publisher.stats.failed_attempts == 4


def test_flush_of_an_empty_buffer_calls_nothing() -> None:
    stub = StubKinesis()
    publisher, _ = publisher_for(stub)
    publisher.flush()
    assert stub.calls == []


def test_counts_per_entity() -> None:
    stub = StubKinesis(fail=lambda call, index: call == 0 and index % 2 == 1)
    publisher, _ = publisher_for(stub)
    expected = {"users": 7, "tracks": 300, "listen_history": 450}
    for entity, count in expected.items():
        for index in range(count):
            publisher.add(record(entity, index))
    publisher.flush()

    assert publisher.stats.published_by_entity == expected
    assert publisher.stats.records == sum(expected.values()) == len(stub.accepted)
    assert publisher.stats.bytes == sum(len(k.encode()) + len(d) for k, d in stub.accepted)


def test_backoff_is_full_jitter_capped() -> None:
    publisher, _ = publisher_for(StubKinesis(), backoff_s=0.1, max_backoff_s=1.0)
    random.seed(3)
    for attempt in range(1, 12):
        ceiling = min(1.0, 0.1 * 2**attempt)
        assert all(0 <= publisher._backoff(attempt) <= ceiling for _ in range(50))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    small=st.lists(st.integers(20, 2_000), max_size=1_100),
    # a few big ones, up to the 1 MiB limit (memory stays bounded: at most ~20 MiB of data)
    large=st.lists(st.integers(100_000, MAX_BYTES_PER_RECORD), max_size=20),
    order=st.randoms(use_true_random=False),
)
def test_any_sizes_are_packed_within_the_limits_in_order(
    small: list[int], large: list[int], order: random.Random
) -> None:
    sizes = small + large
    order.shuffle(sizes)
    stub = StubKinesis()  # asserts the limits on every call
    publisher, _ = publisher_for(stub)
    records = [sized(index, size) for index, size in enumerate(sizes)]
    for item in records:
        publisher.add(item)
    publisher.flush()

    assert [key for key, _ in stub.accepted] == [r.partition_key for r in records]
    # Greedy packing: a call was only cut when the next record would not fit.
    position = 0
    for call in stub.calls[:-1]:
        position += len(call)
        call_bytes = sum(len(r["Data"]) + len(r["PartitionKey"]) for r in call)
        assert (
            len(call) == MAX_RECORDS_PER_CALL
            or call_bytes + records[position].size > MAX_BYTES_PER_CALL
        )
    assert publisher.stats.records == len(records)


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 1_100),
    failure_rate=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_partial_failures_retry_exactly_the_failed_records(
    count: int, failure_rate: float, seed: int
) -> None:
    rng = random.Random(seed)
    stub = StubKinesis(fail=lambda call, index: rng.random() < failure_rate)
    publisher, _ = publisher_for(stub, max_attempts=200)
    for index in range(count):
        publisher.add(record("users", index))
    publisher.flush()

    # Every record got in exactly once, and every retry only carried records that failed.
    keys = [key for key, _ in stub.accepted]
    assert sorted(keys) == sorted(f"users:{index}" for index in range(count))
    assert len(set(keys)) == count
    sent = sum(len(call) for call in stub.calls)
    assert sent == count + publisher.stats.failed_attempts
    assert publisher.stats.published_by_entity == {"users": count}


# --- envelope -------------------------------------------------------------------------------


def test_envelope_round_trip_and_stable_bytes() -> None:
    item = user(first_name="🎵 \"quoted\" 'DROP TABLE'", id=2**63 - 1)
    data = encode_envelope(entity="users", run_id="r1", fetched_at="t", item=item)
    assert data == encode_envelope(entity="users", run_id="r1", fetched_at="t", item=dict(item))
    envelope = decode_envelope(data)
    assert (envelope.entity, envelope.run_id, envelope.fetched_at) == ("users", "r1", "t")
    assert envelope.item == item
    assert list(orjson.loads(data)) == ["schema_version", "entity", "run_id", "fetched_at", "item"]


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[1, 2]", b'{"entity": "users"}', b"\xff\xfe", b'"users"'],
)
def test_decode_rejects_what_is_not_an_envelope(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - JSONDecodeError or ValidationError
        decode_envelope(data)
