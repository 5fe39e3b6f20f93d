"""The metrics AWS services publish about themselves, published by the local cloud.

moto emulates the APIs, not the services' own CloudWatch metrics, yet the alarms and the
dashboard watch some of them. The local cloud runs the Lambda functions itself, so it knows
what Lambda would report: per invocation `Invocations`, `Errors` (the handler raised),
`Duration`, and for stream batches `IteratorAge` (Lambda) and
`GetRecords.IteratorAgeMilliseconds` (Kinesis): the age of the batch's last record. The depth
of the on-failure queue, the work queue and its dead-letter queue
(`ApproximateNumberOfMessagesVisible`, `...NotVisible` for work items in progress) is read from
SQS when published.

Nothing here throttles, so `Throttles` and DynamoDB throttle events never appear locally; the
tests publish those the way AWS would to check their alarms.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from infra.stage import StageResources
from localcloud.monitoring.emf_extraction import MetricAccumulator
from localcloud.triggers.lambda_runtime import Handler


class ServiceMetrics:
    """Records what Lambda, Kinesis and SQS would publish, and publishes it on demand."""

    def __init__(self, resources: StageResources) -> None:
        self.resources = resources
        self.accumulator = MetricAccumulator()

    def instrument(self, function: str, handler: Handler) -> Handler:
        """Wrap a handler the way the Lambda service sees an invocation."""
        function_name = self.resources.functions[function]
        dimensions = {"FunctionName": function_name}

        @functools.wraps(handler)
        def invoke(event: Any, context: Any) -> Any:
            now = datetime.now(UTC)
            self._iterator_age(event, dimensions, now)
            started = time.monotonic()
            failed = True
            try:
                response = handler(event, context)
                failed = False
                return response
            finally:
                elapsed_ms = (time.monotonic() - started) * 1000.0
                self._add("AWS/Lambda", "Invocations", dimensions, "Count", 1)
                self._add("AWS/Lambda", "Errors", dimensions, "Count", 1 if failed else 0)
                self._add("AWS/Lambda", "Duration", dimensions, "Milliseconds", elapsed_ms)

        return invoke

    def _iterator_age(self, event: Any, dimensions: dict[str, str], now: datetime) -> None:
        records = event.get("Records") if isinstance(event, dict) else None
        arrivals = [
            float(record["kinesis"]["approximateArrivalTimestamp"])
            for record in records or []
            if "kinesis" in record
        ]
        if not arrivals:
            return
        age_ms = max(0.0, (now.timestamp() - arrivals[-1]) * 1000.0)
        self._add("AWS/Lambda", "IteratorAge", dimensions, "Milliseconds", age_ms)
        self._add(
            "AWS/Kinesis",
            "GetRecords.IteratorAgeMilliseconds",
            {"StreamName": self.resources.stream},
            "Milliseconds",
            age_ms,
        )

    def _add(
        self, namespace: str, metric: str, dimensions: dict[str, str], unit: str, value: float
    ) -> None:
        self.accumulator.add(namespace, metric, dimensions, unit, datetime.now(UTC), [value])

    def publish(self, cloudwatch: Any, sqs: Any) -> int:
        """Send what was recorded, plus the current depth of the stage's queues that exist."""
        depths = [
            (self.resources.failure_queue, "ApproximateNumberOfMessages", "Visible"),
            (self.resources.work_queue, "ApproximateNumberOfMessages", "Visible"),
            (self.resources.work_queue, "ApproximateNumberOfMessagesNotVisible", "NotVisible"),
            (self.resources.work_dead_letter_queue, "ApproximateNumberOfMessages", "Visible"),
        ]
        for queue, attribute, kind in depths:
            try:
                url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            except ClientError:
                continue  # no such queue in this stage: nothing to report
            # The API's `ApproximateNumberOfMessages` is the metric's "...Visible".
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[attribute])[
                "Attributes"
            ]
            self._add(
                "AWS/SQS",
                f"ApproximateNumberOfMessages{kind}",
                {"QueueName": queue},
                "Count",
                float(attributes[attribute]),
            )
        return self.accumulator.publish(cloudwatch)
