"""Create-or-update what Chalice does not create, against any AWS endpoint.

The same code provisions real AWS, LocalStack and the local cloud's moto server: boto3 picks
the endpoint from `AWS_ENDPOINT_URL`. Every step checks what exists first, so re-running it
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.failures import failure_queue_name
from chalicelib.settings import Settings

TABLE_KEYS: dict[str, list[tuple[str, str, str]]] = {
    # table suffix -> [(attribute, type, key role)]
    "users": [("id", "N", "HASH")],
    "tracks": [("id", "N", "HASH")],
    "listen_history": [("user_id", "N", "HASH"), ("created_at", "S", "RANGE")],
    "runs": [("run_id", "S", "HASH")],
    # the ingest's per-page ledger of published keys (reconciliation, resumable ingestion)
    "run-pages": [("run_id", "S", "HASH"), ("page_id", "S", "RANGE")],
}


@dataclass
class Provisioned:
    """What exists after provisioning, and what this call created."""

    stream_arn: str = ""
    tables: dict[str, str] = field(default_factory=dict)
    bucket: str = ""
    failure_queue_url: str = ""
    failure_queue_arn: str = ""
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
    result.failure_queue_url, result.failure_queue_arn = ensure_queue(
        failure_queue_name(settings), result
    )
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


def ensure_queue(name: str, result: Provisioned) -> tuple[str, str]:
    """The load mapping's on-failure destination; messages kept 14 days (the maximum)."""
    sqs = aws.client("sqs")
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
        url = sqs.create_queue(
            QueueName=name,
            Attributes={
                "MessageRetentionPeriod": str(14 * 24 * 3600),
                "SqsManagedSseEnabled": "true",
            },
        )["QueueUrl"]
        result.created.append(f"sqs queue {name}")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    arn = attributes["Attributes"]["QueueArn"]
    return str(url), str(arn)
