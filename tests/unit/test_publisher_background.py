"""The background publisher sends the same calls in the same order, and never hides a failure."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.stream.publisher import KinesisPublisher, OutgoingRecord, PublishError


class _Kinesis:
    """Records every PutRecords call; fails every record of a call when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.threads.add(threading.current_thread().name)
        self.calls.append([record["PartitionKey"] for record in Records])
        if self.fail:
            return {"Records": [{"ErrorCode": "InternalFailure"} for _ in Records]}
        return {"Records": [{"SequenceNumber": "1"} for _ in Records]}


def _records(count: int) -> list[OutgoingRecord]:
    return [OutgoingRecord(f"users:{n}", b"{}", "users") for n in range(count)]


@given(count=st.integers(min_value=0, max_value=1600))
def test_background_sends_what_foreground_sends(count: int) -> None:
    results = []
    for background in (False, True):
        client = _Kinesis()
        publisher = KinesisPublisher(client=client, stream_name="s", background=background)  # type: ignore[arg-type]
        for record in _records(count):
            publisher.add(record)
        publisher.flush()
        results.append(client.calls)
        assert publisher.stats.published_by_entity.get("users", 0) == count
    assert results[0] == results[1]


def test_background_failure_surfaces_at_flush() -> None:
    client = _Kinesis(fail=True)
    publisher = KinesisPublisher(
        client=client,  # type: ignore[arg-type]
        stream_name="s",
        background=True,
        max_attempts=2,
        sleep=lambda _: None,
    )
    for record in _records(501):  # the first 500 go out in the background
        publisher.add(record)
    with pytest.raises(PublishError):
        publisher.flush()
    assert any(name.startswith("put-records") for name in client.threads)
