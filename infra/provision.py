"""Create-or-update what Chalice does not create, against any AWS endpoint.

The same code provisions real AWS, LocalStack and the local cloud's moto server: boto3 picks
the endpoint from `AWS_ENDPOINT_URL`. Every step checks what exists first, so re-running it
changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.settings import Settings

TABLE_KEYS: dict[str, list[tuple[str, str, str]]] = {
    # table suffix -> [(attribute, type, key role)]
    "users": [("id", "N", "HASH")],
    "tracks": [("id", "N", "HASH")],
    "listen_history": [("user_id", "N", "HASH"), ("created_at", "S", "RANGE")],
    "runs": [("run_id", "S", "HASH")],
    "state": [("pk", "S", "HASH")],  # change detection: content fingerprint per entity key
}

WORK_QUEUE_MAX_RECEIVES = 3
"""A work item failing this many times moves to the dead-letter queue `<queue>-dlq`."""
WORK_QUEUE_VISIBILITY_S = 960
"""Longer than the worker's 15-minute timeout, so a running item is never handed out twice."""


@dataclass
class Provisioned:
    """What exists after provisioning, and what this call created."""

    stream_arn: str = ""
    tables: dict[str, str] = field(default_factory=dict)
    bucket: str = ""
    work_queue_url: str = ""
    created: list[str] = field(default_factory=list)


def provision(settings: Settings, shard_count: int = 2) -> Provisioned:
    result = Provisioned()
    result.stream_arn = ensure_stream(settings.stream_name, shard_count, result)
    for suffix in TABLE_KEYS:
        name = settings.table_name(suffix)
        ensure_table(name, TABLE_KEYS[suffix], result)
        result.tables[suffix] = name
    ensure_bucket(settings.quarantine_bucket, result)
    result.bucket = settings.quarantine_bucket
    result.work_queue_url = ensure_work_queue(settings.work_queue, result)
    return result


def ensure_stream(name: str, shard_count: int, result: Provisioned) -> str:
    kinesis = aws.client("kinesis")
    try:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        kinesis.create_stream(StreamName=name, ShardCount=shard_count)
        result.created.append(f"kinesis stream {name} ({shard_count} shards)")
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    return str(summary["StreamARN"])


def ensure_table(name: str, keys: list[tuple[str, str, str]], result: Provisioned) -> None:
    dynamodb = aws.client("dynamodb")
    try:
        dynamodb.describe_table(TableName=name)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        definition: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": [
                {"AttributeName": attr, "AttributeType": kind} for attr, kind, _ in keys
            ],
            "KeySchema": [{"AttributeName": attr, "KeyType": role} for attr, _, role in keys],
            "BillingMode": "PAY_PER_REQUEST",
        }
        dynamodb.create_table(**definition)
        result.created.append(f"dynamodb table {name}")
    dynamodb.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )


def ensure_bucket(name: str, result: Provisioned) -> None:
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=name)
        return
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
    region = s3.meta.region_name
    if region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    result.created.append(f"s3 bucket {name}")


def ensure_work_queue(name: str, result: Provisioned) -> str:
    """The fan-out work queue and its dead-letter queue; returns the work queue's URL."""
    sqs = aws.client("sqs")
    dlq_url = _ensure_queue(sqs, f"{name}-dlq", {}, result)
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    dlq_arn = dlq["Attributes"]["QueueArn"]
    redrive = json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": WORK_QUEUE_MAX_RECEIVES}
    )
    attributes = {
        "VisibilityTimeout": str(WORK_QUEUE_VISIBILITY_S),
        "RedrivePolicy": redrive,
    }
    url = _ensure_queue(sqs, name, attributes, result)
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str], result: Provisioned) -> str:
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
    url = str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    result.created.append(f"sqs queue {name}")
    return url
