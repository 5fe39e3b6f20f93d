"""A PutRecords call still throttled after botocore's retries is resent, not fatal."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from chalicelib.stream.publisher import KinesisPublisher, OutgoingRecord, PublishError


def throttle_first(calls: int, code: str = "ProvisionedThroughputExceededException") -> Any:
    seen = {"n": 0}

    def hook(**_: Any) -> Any:
        seen["n"] += 1
        if seen["n"] > calls:
            return None
        error = {"Error": {"Code": code, "Message": "Rate exceeded"}}
        return AWSResponse("", 400, HTTPHeaders(), None), error

    return hook


@pytest.fixture
def stream(aws_env: str) -> tuple[Any, str]:
    kinesis = boto3.client("kinesis")
    name = f"throttle-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1})
    return kinesis, name


def records(n: int) -> list[OutgoingRecord]:
    return [OutgoingRecord(f"users:{i}", b"{}", "users") for i in range(n)]


def test_a_throttled_call_is_resent(stream: tuple[Any, str]) -> None:
    kinesis, name = stream
    kinesis.meta.events.register_first("before-call.kinesis.PutRecords", throttle_first(2))
    publisher = KinesisPublisher(kinesis, name, backoff_s=0.001, sleep=lambda _: None)
    for record in records(5):
        publisher.add(record)
    publisher.flush()
    assert publisher.stats.published_by_entity == {"users": 5}
    assert publisher.stats.failed_attempts == 10


def test_a_call_that_stays_throttled_fails_the_publish(stream: tuple[Any, str]) -> None:
    kinesis, name = stream
    kinesis.meta.events.register_first("before-call.kinesis.PutRecords", throttle_first(99))
    publisher = KinesisPublisher(kinesis, name, max_attempts=3, sleep=lambda _: None)
    publisher.add(records(1)[0])
    with pytest.raises(PublishError, match="after 3 PutRecords attempts"):
        publisher.flush()


def test_other_errors_are_not_retried(stream: tuple[Any, str]) -> None:
    kinesis, name = stream
    kinesis.meta.events.register_first(
        "before-call.kinesis.PutRecords", throttle_first(1, code="AccessDeniedException")
    )
    publisher = KinesisPublisher(kinesis, name, sleep=lambda _: None)
    publisher.add(records(1)[0])
    with pytest.raises(Exception, match="AccessDenied"):
        publisher.flush()
