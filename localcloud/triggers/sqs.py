"""The SQS trigger of the fan-out worker, as Lambda runs it: N concurrent pollers.

Each poller receives one message at a time (the worker's batch size is 1), calls the handler
with the SQS event Lambda sends, and deletes the message when the handler returns. A handler
that raises leaves the message on the queue; it is made visible again at once (Lambda waits
for the visibility timeout, which would only slow the local run down), and after the queue's
`maxReceiveCount` SQS moves it to the dead-letter queue. The pollers stop once the producer is
done and the queue holds nothing, visible or in flight.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from localcloud.triggers.lambda_runtime import ACCOUNT_ID, Handler, LambdaContext


@dataclass
class WorkerProgress:
    invocations: int = 0
    failures: int = 0
    """Handler errors; the item was handed out again, so they fail the run only if it never
    succeeded (the reconciliation checks the manifest and the dead-letter queue)."""
    last_failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """A poller that broke: the run fails."""


def sqs_event(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """The Lambda event for one received SQS message."""
    body = message["Body"]
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": body,
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        ]
    }


@dataclass
class SqsEventSourceMapping:
    """Drives a handler from an SQS queue with `concurrency` pollers."""

    sqs: Any
    queue_url: str
    handler: Handler
    concurrency: int = 2
    function_name: str = "ingest_worker"
    region: str = "us-east-1"
    memory_mb: int = 512
    timeout_s: float = 900.0
    """The deployed function's memory and timeout (its Lambda context says them)."""
    idle_poll_s: float = 0.05
    progress: WorkerProgress = field(default_factory=WorkerProgress)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def queue_arn(self) -> str:
        return f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{self.queue_url.rsplit('/', 1)[-1]}"

    def run(self, producer_done: threading.Event) -> WorkerProgress:
        """Poll until the producer is done and the queue is empty; returns what happened."""
        threads = [
            threading.Thread(
                target=self._poll_safely, args=(producer_done,), name=f"sqs-{n}", daemon=True
            )
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.progress

    def _poll_safely(self, producer_done: threading.Event) -> None:
        try:
            self._poll(producer_done)
        except Exception as error:  # a broken poller must fail the run, not hang it
            with self._lock:
                self.progress.errors.append(f"poller: {type(error).__name__}: {error}")

    def _poll(self, producer_done: threading.Event) -> None:
        while True:
            done_before_poll = producer_done.is_set()
            # short polls: a long poll would hold a single-threaded emulator for its duration
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
            ).get("Messages", [])
            if messages:
                self._invoke(messages[0])
            elif done_before_poll and self._drained():
                return
            else:
                time.sleep(self.idle_poll_s)

    def _invoke(self, message: dict[str, Any]) -> None:
        event = sqs_event(message, self.queue_arn, self.region)
        with self._lock:
            self.progress.invocations += 1
        try:
            context = LambdaContext(
                self.function_name,
                memory_limit_in_mb=self.memory_mb,
                timeout_s=self.timeout_s,
                region=self.region,
            )
            self.handler(event, context)
        except Exception as error:
            with self._lock:
                self.progress.failures += 1
                failure = f"{type(error).__name__}: {str(error)[:300]}"
                self.progress.last_failures = [*self.progress.last_failures[-4:], failure]
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=0,
            )
            return
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _drained(self) -> bool:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]) == 0
            and int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 0
        )
