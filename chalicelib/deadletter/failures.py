"""The load mapping's on-failure destination: an SQS queue of Kinesis batch descriptions.

When Lambda gives up on a batch (retries exhausted, records too old) it does not send the
records, only where they are: shard, first and last sequence number, stream ARN. This module
names the queue, parses those messages (redrive reads the range back from the stream) and
builds them in AWS's exact shape (the local cloud's driver sends the same JSON AWS sends).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from chalicelib.settings import Settings

RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


def failure_queue_name(settings: Settings) -> str:
    """`<table prefix>-load-failures`, next to the stage's tables."""
    return settings.table_name("load-failures")


def _iso_millis(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class KinesisBatchInfo:
    """Where the records Lambda gave up on are: one shard, a closed range of sequence numbers."""

    shard_id: str
    start_sequence_number: str
    end_sequence_number: str
    approximate_arrival_of_first_record: str
    approximate_arrival_of_last_record: str
    batch_size: int
    stream_arn: str

    @property
    def stream_name(self) -> str:
        return self.stream_arn.rsplit("/", 1)[-1]

    def contains(self, sequence_number: str) -> bool:
        return (
            int(self.start_sequence_number) <= int(sequence_number) <= int(self.end_sequence_number)
        )


@dataclass(frozen=True)
class FailureRecord:
    """One on-failure destination message: the batch and why Lambda gave up on it."""

    condition: str
    batch: KinesisBatchInfo
    function_arn: str
    approximate_invoke_count: int
    timestamp: str
    request_id: str = ""
    function_error: str | None = None

    def to_json(self) -> bytes:
        """The JSON document AWS sends for a Kinesis event-source mapping's failed batch."""
        response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if self.function_error:
            response_context["functionError"] = self.function_error
        return orjson.dumps(
            {
                "requestContext": {
                    "requestId": self.request_id,
                    "functionArn": self.function_arn,
                    "condition": self.condition,
                    "approximateInvokeCount": self.approximate_invoke_count,
                },
                "responseContext": response_context,
                "version": "1.0",
                "timestamp": self.timestamp,
                "KinesisBatchInfo": {
                    "shardId": self.batch.shard_id,
                    "startSequenceNumber": self.batch.start_sequence_number,
                    "endSequenceNumber": self.batch.end_sequence_number,
                    "approximateArrivalOfFirstRecord": (
                        self.batch.approximate_arrival_of_first_record
                    ),
                    "approximateArrivalOfLastRecord": self.batch.approximate_arrival_of_last_record,
                    "batchSize": self.batch.batch_size,
                    "streamArn": self.batch.stream_arn,
                },
            }
        )

    @classmethod
    def from_json(cls, body: str | bytes) -> FailureRecord:
        """Parse a destination message; raises ValueError when it is not one."""
        try:
            document = orjson.loads(body)
            request = document["requestContext"]
            info = document["KinesisBatchInfo"]
            batch = KinesisBatchInfo(
                shard_id=str(info["shardId"]),
                start_sequence_number=str(info["startSequenceNumber"]),
                end_sequence_number=str(info["endSequenceNumber"]),
                approximate_arrival_of_first_record=str(info["approximateArrivalOfFirstRecord"]),
                approximate_arrival_of_last_record=str(info["approximateArrivalOfLastRecord"]),
                batch_size=int(info["batchSize"]),
                stream_arn=str(info["streamArn"]),
            )
            return cls(
                condition=str(request["condition"]),
                batch=batch,
                function_arn=str(request.get("functionArn", "")),
                approximate_invoke_count=int(request.get("approximateInvokeCount", 0)),
                timestamp=str(document.get("timestamp", "")),
                request_id=str(request.get("requestId", "")),
                function_error=(document.get("responseContext") or {}).get("functionError"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a Kinesis on-failure record: {error}") from error


def batch_info(
    records: list[dict[str, Any]], *, shard_id: str, stream_arn: str
) -> KinesisBatchInfo:
    """Describe Lambda event records (`Records[*]` of a Kinesis event) as AWS does."""
    first, last = records[0]["kinesis"], records[-1]["kinesis"]
    return KinesisBatchInfo(
        shard_id=shard_id,
        start_sequence_number=str(first["sequenceNumber"]),
        end_sequence_number=str(last["sequenceNumber"]),
        approximate_arrival_of_first_record=_iso_millis(
            datetime.fromtimestamp(float(first["approximateArrivalTimestamp"]), UTC)
        ),
        approximate_arrival_of_last_record=_iso_millis(
            datetime.fromtimestamp(float(last["approximateArrivalTimestamp"]), UTC)
        ),
        batch_size=len(records),
        stream_arn=stream_arn,
    )


def now_iso() -> str:
    return _iso_millis(datetime.now(UTC))
