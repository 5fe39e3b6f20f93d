"""Shows the pipeline's EventBridge events: a rule on the bus sends them to an SQS queue.

This stands in for the retraining job that subscribes in AWS: the reconcile function publishes
DatasetUpdated when it settles a run as succeeded, and the local cloud reads the run's event
back from the queue to show what a subscriber receives.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from chalicelib.aws import clients as aws
from chalicelib.reconcile.notify import DETAIL_TYPE, SOURCE


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

    def receive(self, run_id: str | None = None, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """The next captured event of `run_id` (any run's when None), deleted from the queue,
        or None after `timeout_s`. Events of other runs (a run settled by a later sweep, after
        its command was interrupted) are deleted and passed over."""
        sqs = aws.client("sqs")
        deadline = time.monotonic() + timeout_s
        while True:
            messages = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            found: dict[str, Any] | None = None
            for message in messages:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                event: dict[str, Any] = orjson.loads(message["Body"])
                if run_id is None or event.get("detail", {}).get("run_id") == run_id:
                    found = found or event
            if found is not None:
                return found
            if time.monotonic() > deadline:
                return None
