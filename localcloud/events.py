"""Shows the pipeline's EventBridge events: a rule on the bus sends them to an SQS queue.

This stands in for the retraining job that subscribes in AWS: the local cloud publishes the
DatasetUpdated event after a run, then reads it back from the queue to show what a
subscriber receives.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from chalicelib import aws
from chalicelib.notify import DETAIL_TYPE, SOURCE


class EventCapture:
    """An EventBridge rule matching the pipeline's events, targeting a new SQS queue."""

    def __init__(self, name: str, bus_name: str) -> None:
        self.name = name
        self.bus_name = bus_name
        self.queue_url = ""

    def start(self) -> EventCapture:
        sqs = aws.client("sqs")
        events = aws.client("events")
        self.queue_url = sqs.create_queue(QueueName=self.name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_rule(
            Name=self.name,
            EventBusName=self.bus_name,
            EventPattern=orjson.dumps({"source": [SOURCE], "detail-type": [DETAIL_TYPE]}).decode(),
            State="ENABLED",
        )
        events.put_targets(
            Rule=self.name,
            EventBusName=self.bus_name,
            Targets=[{"Id": "local-subscriber", "Arn": queue_arn}],
        )
        return self

    def receive(self, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """The next captured event (deleted from the queue), or None after `timeout_s`."""
        sqs = aws.client("sqs")
        deadline = time.monotonic() + timeout_s
        while True:
            messages = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1
            ).get("Messages", [])
            if messages:
                message = messages[0]
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                event: dict[str, Any] = orjson.loads(message["Body"])
                return event
            if time.monotonic() > deadline:
                return None
