"""Faults of the AWS clients: botocore event hooks answer as the services do when they shed load.

On the pipeline's cached boto3 clients (`chalicelib.aws.clients.client`) and on PynamoDB's:
throttling errors (which botocore's standard retry mode retries), part of a PutRecords call
failed, part of a BatchWriteItem left in `UnprocessedItems`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from botocore.awsrequest import AWSResponse, HTTPHeaders

from localcloud.chaos.fault import Fault

if TYPE_CHECKING:
    from localcloud.chaos.run import Chaos


def _error_response(status: int, code: str, message: str, json_version: str) -> AWSResponse:
    """An HTTP error answer in the AWS JSON protocol, which botocore parses and retries."""
    body = orjson.dumps({"__type": code, "message": message})
    headers = HTTPHeaders()
    headers["Content-Type"] = f"application/x-amz-json-{json_version}"
    headers["x-amzn-ErrorType"] = code
    return AWSResponse("https://chaos.invalid/", status, headers, _Body(body))


@dataclass
class _Body:
    data: bytes

    def stream(self, **_: Any) -> Iterable[bytes]:
        yield self.data


class KinesisThrottle(Fault):
    name = "kinesis-throttle"
    default_probability = 0.1
    description = "PutRecords answers ProvisionedThroughputExceededException"

    def install(self, chaos: Chaos) -> None:
        chaos.hook("kinesis", "before-send.kinesis.PutRecords", self._before_send)

    def _before_send(self, **_: Any) -> AWSResponse | None:
        if not self.decide():
            return None
        return _error_response(
            400,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for shard in stream (chaos)",
            "1.1",
        )


class KinesisPartial(Fault):
    name = "kinesis-partial"
    default_probability = 0.2
    description = "PutRecords accepts only part of the records (FailedRecordCount > 0)"

    def install(self, chaos: Chaos) -> None:
        chaos.hook("kinesis", "before-parameter-build.kinesis.PutRecords", self._drop_some)
        chaos.hook("kinesis", "after-call.kinesis.PutRecords", self._report_failed)

    def _drop_some(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        records = params.get("Records") or []
        if len(records) < 2 or not self.decide():
            return
        rng = random.Random(self.draw())  # noqa: S311 - chaos
        count = max(1, int(len(records) * rng.uniform(0.05, 0.5)))
        failed = sorted(rng.sample(range(len(records)), min(count, len(records) - 1)))
        context["chaos_failed_records"] = failed
        dropped = set(failed)
        params["Records"] = [r for i, r in enumerate(records) if i not in dropped]

    def _report_failed(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        failed = context.pop("chaos_failed_records", None)
        if not failed or "Records" not in parsed:
            return
        accepted = iter(parsed["Records"])
        results: list[dict[str, Any]] = []
        dropped = set(failed)
        for index in range(len(parsed["Records"]) + len(failed)):
            if index in dropped:
                results.append(
                    {
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded for shard (chaos)",
                    }
                )
            else:
                results.append(next(accepted))
        parsed["Records"] = results
        parsed["FailedRecordCount"] = int(parsed.get("FailedRecordCount", 0)) + len(failed)


class DynamoDBThrottle(Fault):
    name = "dynamodb-throttle"
    default_probability = 0.05
    description = "DynamoDB throttles a call, or leaves part of a BatchWriteItem unprocessed"

    def install(self, chaos: Chaos) -> None:
        chaos.hook("dynamodb", "before-send.dynamodb", self._before_send)
        chaos.hook("dynamodb", "before-parameter-build.dynamodb.BatchWriteItem", self._defer)
        chaos.hook("dynamodb", "after-call.dynamodb.BatchWriteItem", self._report_unprocessed)

    def _before_send(self, **_: Any) -> AWSResponse | None:
        if not self.decide():
            return None
        return _error_response(
            400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded (chaos)",
            "1.0",
        )

    def _defer(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        requests = params.get("RequestItems") or {}
        total = sum(len(items) for items in requests.values())
        if total < 2 or not self.decide():
            return
        rng = random.Random(self.draw())  # noqa: S311 - chaos
        budget = max(1, min(total - 1, int(total * rng.uniform(0.1, 0.5))))
        deferred: dict[str, list[Any]] = {}
        for table in list(requests):
            items = requests[table]
            take = min(budget, len(items) if len(requests) > 1 else len(items) - 1)
            if take <= 0:
                continue
            deferred[table], requests[table] = items[-take:], items[:-take]
            if not requests[table]:
                del requests[table]
            budget -= take
            if budget <= 0:
                break
        context["chaos_unprocessed"] = deferred

    def _report_unprocessed(
        self, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        deferred = context.pop("chaos_unprocessed", None)
        if not deferred or "Error" in parsed:
            return
        unprocessed = parsed.setdefault("UnprocessedItems", {})
        for table, items in deferred.items():
            unprocessed.setdefault(table, []).extend(items)
