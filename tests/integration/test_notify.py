"""The DatasetUpdated event: what a subscriber of the bus receives, and a refused event."""

from __future__ import annotations

import uuid

import pytest

from chalicelib.aws import clients as aws
from chalicelib.reconcile.notify import (
    DETAIL_TYPE,
    SOURCE,
    NotifyError,
    dataset_updated_detail,
    publish_dataset_updated,
)
from localcloud.events import EventCapture

COUNTS = {
    "users": {
        "fetched": 3,
        "published": 3,
        "quarantined": 0,
        "written": {"dynamodb": 3, "postgres": 3},
        "stored": {"dynamodb": 3, "postgres": 3},
    }
}


def test_a_subscriber_receives_the_event_with_the_run_counts(aws_env: str) -> None:
    capture = EventCapture(f"test-events-{uuid.uuid4().hex[:8]}", "default").start()
    event_id = publish_dataset_updated(
        aws.client("events"), "default", "run-42", "succeeded", COUNTS
    )
    event = capture.receive(timeout_s=10)
    assert event is not None
    assert event["id"] == event_id
    assert event["source"] == SOURCE == "moovitamix.pipeline"
    assert event["detail-type"] == DETAIL_TYPE == "DatasetUpdated"
    assert event["detail"] == {
        "detail_version": 1,
        "run_id": "run-42",
        "status": "succeeded",
        "entities": COUNTS,
    }
    assert capture.receive(timeout_s=1) is None  # exactly one event


def test_other_events_are_not_captured(aws_env: str) -> None:
    capture = EventCapture(f"test-events-{uuid.uuid4().hex[:8]}", "default").start()
    aws.client("events").put_events(
        Entries=[{"Source": "someone.else", "DetailType": DETAIL_TYPE, "Detail": "{}"}]
    )
    assert capture.receive(timeout_s=1) is None


def test_a_refused_event_raises(aws_env: str) -> None:
    with pytest.raises(NotifyError, match="refused"):
        publish_dataset_updated(
            aws.client("events"), f"no-such-bus-{uuid.uuid4().hex[:6]}", "run-1", "ok", {}
        )


def test_detail_shape() -> None:
    assert dataset_updated_detail("r", "succeeded", COUNTS)["entities"] == COUNTS
