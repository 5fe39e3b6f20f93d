"""Declarative AWS resources, usable two ways: applied with boto3, or rendered as CloudFormation.

A resource knows how to create-or-update itself against whatever endpoint boto3 is pointed at
(AWS, LocalStack, moto: `AWS_ENDPOINT_URL`), how to delete itself, and what it looks like as
CloudFormation. Both forms come from the same fields, so the script and the template cannot
drift. `apply` compares before it writes: re-applying an unchanged resource makes no change
and reports `unchanged`.

A resource may reference another one's attribute with `Attr` (the value once applied, an
`Fn::GetAtt`/`Ref` in CloudFormation); resources are applied in list order, so the referenced
one must come first.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws

Action = Literal["created", "updated", "unchanged", "deleted", "absent", "retained", "kept"]
"""`retained`: a production stage's data store that `destroy` keeps (see `retain` fields)."""


def _deletion_policy(retain: bool) -> dict[str, str]:
    """CloudFormation keeps a retained resource when the stack is deleted or replaces it."""
    policy = "Retain" if retain else "Delete"
    return {"DeletionPolicy": policy, "UpdateReplacePolicy": policy}


@dataclass(frozen=True)
class Attr:
    """An attribute of another resource: `Ref` or a `Fn::GetAtt` name such as `Arn`."""

    logical_id: str
    attribute: str = "Arn"

    def cloudformation(self) -> dict[str, Any]:
        if self.attribute == "Ref":
            return {"Ref": self.logical_id}
        return {"Fn::GetAtt": [self.logical_id, self.attribute]}


@dataclass
class Change:
    """What one apply or delete did to one resource."""

    resource: str
    action: Action
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        suffix = f" ({'; '.join(self.details)})" if self.details else ""
        return f"{self.action:<9} {self.resource}{suffix}"


@dataclass
class ApplyContext:
    """Attributes of the resources applied so far (`logical id -> {attribute: value}`)."""

    attributes: dict[str, dict[str, str]] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return aws.client(service)

    def resolve(self, value: Any) -> Any:
        """`value` with every `Attr` replaced by the applied resource's attribute."""
        if isinstance(value, Attr):
            try:
                return self.attributes[value.logical_id][value.attribute]
            except KeyError as error:
                raise KeyError(
                    f"{value.logical_id}.{value.attribute} is not known yet: apply "
                    f"{value.logical_id} before the resources that reference it"
                ) from error
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value


def to_cloudformation(value: Any) -> Any:
    """`value` with every `Attr` replaced by its CloudFormation intrinsic function."""
    if isinstance(value, Attr):
        return value.cloudformation()
    if isinstance(value, dict):
        return {key: to_cloudformation(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_cloudformation(item) for item in value]
    return value


class Resource(Protocol):
    """What every resource offers; builders in `infra.provision.BUILDERS` return these."""

    @property
    def logical_id(self) -> str:
        """CloudFormation logical id, also the key of the resource's applied attributes."""
        ...

    @property
    def label(self) -> str:
        """Kind and name, for reports: `kinesis stream moovitamix-dev-events`."""
        ...

    def apply(self, ctx: ApplyContext) -> Change:
        """Create or update; record attributes in `ctx.attributes[logical_id]`."""
        ...

    def delete(self, ctx: ApplyContext) -> Change: ...

    def cloudformation(self) -> dict[str, Any]:
        """`{logical id: resource definition}`; may hold several (a bucket and its policy)."""
        ...

    def outputs(self) -> dict[str, Any]:
        """CloudFormation outputs worth exporting (ARNs other stacks or Terraform read)."""
        ...


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _missing(error: ClientError, *codes: str) -> bool:
    return error_code(error) in codes


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 300.0) -> None:
    """Poll `check` with a short backoff; emulators answer at once, AWS takes seconds."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


# --------------------------------------------------------------------------------------------
# Kinesis
# --------------------------------------------------------------------------------------------

KINESIS_MANAGED_KEY = "alias/aws/kinesis"
"""AWS-managed key: encryption at rest without a key policy or kms:* grants to maintain."""


@dataclass(frozen=True)
class KinesisStream:
    logical_id: str
    name: str
    shard_count: int
    retention_hours: int = 24
    retain: bool = False
    """Keep the stream when the stack or the stage is removed (production stages)."""

    @property
    def label(self) -> str:
        return f"kinesis stream {self.name}"

    def _summary(self, client: Any) -> dict[str, Any] | None:
        try:
            return dict(
                client.describe_stream_summary(StreamName=self.name)["StreamDescriptionSummary"]
            )
        except ClientError as error:
            if _missing(error, "ResourceNotFoundException"):
                return None
            raise

    def _wait_active(self, client: Any) -> dict[str, Any]:
        summary: dict[str, Any] = {}

        def active() -> bool:
            summary.update(self._summary(client) or {})
            return summary.get("StreamStatus") == "ACTIVE"

        wait_until(active, f"{self.label} becoming ACTIVE")
        return summary

    def apply(self, ctx: ApplyContext) -> Change:
        client = ctx.client("kinesis")
        change = Change(self.label, "unchanged")
        if self._summary(client) is None:
            client.create_stream(
                StreamName=self.name,
                ShardCount=self.shard_count,
                StreamModeDetails={"StreamMode": "PROVISIONED"},
            )
            change.action = "created"
            change.details.append(f"{self.shard_count} shards")
        summary = self._wait_active(client)
        if change.action != "created" and summary["OpenShardCount"] != self.shard_count:
            client.update_shard_count(
                StreamName=self.name,
                TargetShardCount=self.shard_count,
                ScalingType="UNIFORM_SCALING",
            )
            change.details.append(f"shards {summary['OpenShardCount']} -> {self.shard_count}")
            summary = self._wait_active(client)
        retention = int(summary.get("RetentionPeriodHours", 24))
        if retention < self.retention_hours:
            client.increase_stream_retention_period(
                StreamName=self.name, RetentionPeriodHours=self.retention_hours
            )
        elif retention > self.retention_hours:
            client.decrease_stream_retention_period(
                StreamName=self.name, RetentionPeriodHours=self.retention_hours
            )
        if retention != self.retention_hours:
            change.details.append(f"retention {retention} h -> {self.retention_hours} h")
            summary = self._wait_active(client)
        if summary.get("EncryptionType") != "KMS":
            client.start_stream_encryption(
                StreamName=self.name, EncryptionType="KMS", KeyId=KINESIS_MANAGED_KEY
            )
            if change.action != "created":
                change.details.append("encryption at rest enabled")
            summary = self._wait_active(client)
        if change.details and change.action == "unchanged":
            change.action = "updated"
        ctx.attributes[self.logical_id] = {"Arn": str(summary["StreamARN"]), "Ref": self.name}
        return change

    def delete(self, ctx: ApplyContext) -> Change:
        client = ctx.client("kinesis")
        if self._summary(client) is None:
            return Change(self.label, "absent")
        if self.retain:
            return Change(self.label, "retained", ["production stage: delete it by hand"])
        client.delete_stream(StreamName=self.name, EnforceConsumerDeletion=True)
        wait_until(lambda: self._summary(client) is None, f"{self.label} being deleted")
        return Change(self.label, "deleted")

    def cloudformation(self) -> dict[str, Any]:
        return {
            self.logical_id: {
                "Type": "AWS::Kinesis::Stream",
                **_deletion_policy(self.retain),
                "Properties": {
                    "Name": self.name,
                    "ShardCount": self.shard_count,
                    "RetentionPeriodHours": self.retention_hours,
                    "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                    "StreamEncryption": {
                        "EncryptionType": "KMS",
                        "KeyId": KINESIS_MANAGED_KEY,
                    },
                },
            }
        }

    def outputs(self) -> dict[str, Any]:
        return {f"{self.logical_id}Arn": {"Value": Attr(self.logical_id).cloudformation()}}


# --------------------------------------------------------------------------------------------
# DynamoDB
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableIndex:
    """A global secondary index: its keys and the attributes it projects besides them."""

    name: str
    keys: tuple[tuple[str, str, str], ...]
    """(attribute, type, key role) as in `DynamoTable.keys`."""
    projected: tuple[str, ...] = ()

    def definition(self) -> dict[str, Any]:
        return {
            "IndexName": self.name,
            "KeySchema": [{"AttributeName": attr, "KeyType": role} for attr, _, role in self.keys],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(self.projected)}
            if self.projected
            else {"ProjectionType": "KEYS_ONLY"},
        }


@dataclass(frozen=True)
class DynamoTable:
    logical_id: str
    name: str
    keys: tuple[tuple[str, str, str], ...]
    """(attribute, type, key role) as in `infra.provision.TABLE_KEYS`."""
    point_in_time_recovery: bool = True
    retain: bool = False
    """Keep the table when the stack or the stage is removed (production stages)."""
    indexes: tuple[TableIndex, ...] = ()
    """Global secondary indexes; one missing on an existing table is added in place."""

    @property
    def label(self) -> str:
        return f"dynamodb table {self.name}"

    def _description(self, client: Any) -> dict[str, Any] | None:
        try:
            return dict(client.describe_table(TableName=self.name)["Table"])
        except ClientError as error:
            if _missing(error, "ResourceNotFoundException"):
                return None
            raise

    @property
    def _key_schema(self) -> list[dict[str, str]]:
        return [{"AttributeName": attr, "KeyType": role} for attr, _, role in self.keys]

    @property
    def _attribute_definitions(self) -> list[dict[str, str]]:
        every = [*self.keys, *(key for index in self.indexes for key in index.keys)]
        kinds = {attr: kind for attr, kind, _ in every}
        return [{"AttributeName": attr, "AttributeType": kind} for attr, kind in kinds.items()]

    @property
    def _index_definitions(self) -> dict[str, Any]:
        if not self.indexes:
            return {}
        return {"GlobalSecondaryIndexes": [index.definition() for index in self.indexes]}

    def _add_missing_indexes(self, client: Any, table: Mapping[str, Any]) -> list[str]:
        """Create the declared indexes the table lacks (one UpdateTable each: DynamoDB adds
        one index at a time, backfilling it from the table's rows)."""
        existing = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
        added = []
        for index in self.indexes:
            if index.name in existing:
                continue
            client.update_table(
                TableName=self.name,
                AttributeDefinitions=self._attribute_definitions,
                GlobalSecondaryIndexUpdates=[{"Create": index.definition()}],
            )
            added.append(f"index {index.name} added")

            def built(name: str = index.name) -> bool:
                described = self._description(client) or {}
                states = {
                    found["IndexName"]: found.get("IndexStatus", "ACTIVE")
                    for found in described.get("GlobalSecondaryIndexes", [])
                }
                return described.get("TableStatus") == "ACTIVE" and states.get(name) == "ACTIVE"

            wait_until(built, f"{self.label} index {index.name} becoming ACTIVE")
        return added

    def apply(self, ctx: ApplyContext) -> Change:
        client = ctx.client("dynamodb")
        change = Change(self.label, "unchanged")
        table = self._description(client)
        if table is None:
            client.create_table(
                TableName=self.name,
                AttributeDefinitions=self._attribute_definitions,
                KeySchema=self._key_schema,
                BillingMode="PAY_PER_REQUEST",
                **self._index_definitions,
            )
            change.action = "created"
        else:
            if table["KeySchema"] != self._key_schema:
                raise ValueError(
                    f"{self.label} has key schema {table['KeySchema']}, expected "
                    f"{self._key_schema}: keys cannot change in place; migrate the data"
                )
            billing = table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
            if billing != "PAY_PER_REQUEST":
                client.update_table(TableName=self.name, BillingMode="PAY_PER_REQUEST")
                change.details.append(f"billing {billing} -> PAY_PER_REQUEST")
            change.details += self._add_missing_indexes(client, table)

        def active() -> bool:
            return (self._description(client) or {}).get("TableStatus") == "ACTIVE"

        wait_until(active, f"{self.label} becoming ACTIVE")
        if self.point_in_time_recovery and not self._pitr_enabled(client):
            self._enable_pitr(client)
            if change.action != "created":
                change.details.append("point-in-time recovery enabled")
        if change.details and change.action == "unchanged":
            change.action = "updated"
        arn = str((self._description(client) or {})["TableArn"])
        ctx.attributes[self.logical_id] = {"Arn": arn, "Ref": self.name}
        return change

    def _pitr_enabled(self, client: Any) -> bool:
        description = client.describe_continuous_backups(TableName=self.name)
        status = description["ContinuousBackupsDescription"].get(
            "PointInTimeRecoveryDescription", {}
        )
        return bool(status.get("PointInTimeRecoveryStatus") == "ENABLED")

    def _enable_pitr(self, client: Any) -> None:
        # Right after creation AWS may still answer "continuous backups unavailable".
        def enabled() -> bool:
            try:
                client.update_continuous_backups(
                    TableName=self.name,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                )
            except ClientError as error:
                if _missing(error, "ContinuousBackupsUnavailableException"):
                    return False
                raise
            return True

        wait_until(enabled, f"point-in-time recovery of {self.label}")

    def delete(self, ctx: ApplyContext) -> Change:
        client = ctx.client("dynamodb")
        if self._description(client) is None:
            return Change(self.label, "absent")
        if self.retain:
            return Change(self.label, "retained", ["production stage: delete it by hand"])
        client.delete_table(TableName=self.name)
        wait_until(lambda: self._description(client) is None, f"{self.label} being deleted")
        return Change(self.label, "deleted")

    def cloudformation(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "TableName": self.name,
            "AttributeDefinitions": self._attribute_definitions,
            "KeySchema": self._key_schema,
            "BillingMode": "PAY_PER_REQUEST",
            **self._index_definitions,
        }
        if self.point_in_time_recovery:
            properties["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
        return {
            self.logical_id: {
                "Type": "AWS::DynamoDB::Table",
                **_deletion_policy(self.retain),
                "Properties": properties,
            }
        }

    def outputs(self) -> dict[str, Any]:
        return {}


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------

_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
_ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
_OWNERSHIP = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


LIFECYCLE_RULE_ID = "expire-quarantined-records"


def tls_only_policy(bucket_arn: str) -> dict[str, Any]:
    """Deny every request to the bucket and its objects that does not come over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


@dataclass(frozen=True)
class PrivateBucket:
    """A bucket nobody outside the account reads: public access blocked, encrypted at rest.

    `expiration_days`: objects are deleted that many days after they were written (the
    quarantine holds personal data such as emails; None keeps them). `tls_only`: a bucket
    policy denies any request not made over TLS; off only for an emulator reached over plain
    HTTP, which enforces the policy and would then refuse every request. `retain`: keep the
    bucket and its objects when the stack or the stage is removed (production stages).
    """

    logical_id: str
    name: str
    expiration_days: int | None = None
    tls_only: bool = True
    retain: bool = False

    @property
    def policy_logical_id(self) -> str:
        return f"{self.logical_id}Policy"

    @property
    def lifecycle(self) -> dict[str, Any] | None:
        """The lifecycle configuration as the S3 API takes it."""
        if self.expiration_days is None:
            return None
        return {
            "Rules": [
                {
                    "ID": LIFECYCLE_RULE_ID,
                    "Filter": {"Prefix": ""},
                    "Status": "Enabled",
                    "Expiration": {"Days": self.expiration_days},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }
            ]
        }

    @property
    def label(self) -> str:
        return f"s3 bucket {self.name}"

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.name}"

    def _exists(self, client: Any) -> bool:
        try:
            client.head_bucket(Bucket=self.name)
        except ClientError as error:
            if _missing(error, "404", "NoSuchBucket", "NotFound"):
                return False
            raise
        return True

    def _current(self, client: Any, getter: str, key: str, missing: str) -> Any:
        try:
            return getattr(client, getter)(Bucket=self.name)[key]
        except ClientError as error:
            if _missing(error, missing):
                return None
            raise

    def apply(self, ctx: ApplyContext) -> Change:
        client = ctx.client("s3")
        change = Change(self.label, "unchanged")
        if not self._exists(client):
            region = client.meta.region_name
            if region == "us-east-1":
                client.create_bucket(Bucket=self.name)
            else:
                client.create_bucket(
                    Bucket=self.name, CreateBucketConfiguration={"LocationConstraint": region}
                )
            change.action = "created"
        settings: list[tuple[str, str, str, str, Any, Callable[[], Any]]] = [
            (
                "public access blocked",
                "get_public_access_block",
                "PublicAccessBlockConfiguration",
                "NoSuchPublicAccessBlockConfiguration",
                _PUBLIC_ACCESS_BLOCK,
                lambda: client.put_public_access_block(
                    Bucket=self.name, PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCK
                ),
            ),
            (
                "encryption at rest",
                "get_bucket_encryption",
                "ServerSideEncryptionConfiguration",
                "ServerSideEncryptionConfigurationNotFoundError",
                _ENCRYPTION,
                lambda: client.put_bucket_encryption(
                    Bucket=self.name, ServerSideEncryptionConfiguration=_ENCRYPTION
                ),
            ),
            (
                "object ownership enforced",
                "get_bucket_ownership_controls",
                "OwnershipControls",
                "OwnershipControlsNotFoundError",
                _OWNERSHIP,
                lambda: client.put_bucket_ownership_controls(
                    Bucket=self.name, OwnershipControls=_OWNERSHIP
                ),
            ),
        ]
        for description, getter, key, missing, wanted, put in settings:
            current = self._current(client, getter, key, missing)
            if not contains(current, wanted):
                put()
                if change.action != "created":
                    change.details.append(description)
        self._apply_lifecycle(client, change)
        self._apply_policy(client, change)
        if change.details and change.action == "unchanged":
            change.action = "updated"
        ctx.attributes[self.logical_id] = {"Arn": self.arn, "Ref": self.name}
        return change

    def _apply_lifecycle(self, client: Any, change: Change) -> None:
        wanted = self.lifecycle
        current = self._current(
            client, "get_bucket_lifecycle_configuration", "Rules", "NoSuchLifecycleConfiguration"
        )
        if wanted is None:
            if current:
                client.delete_bucket_lifecycle(Bucket=self.name)
                change.details.append("expiration removed")
            return
        if not contains(current, wanted["Rules"]):
            client.put_bucket_lifecycle_configuration(
                Bucket=self.name, LifecycleConfiguration=wanted
            )
            if change.action != "created":
                change.details.append(f"objects expire after {self.expiration_days} days")

    def _apply_policy(self, client: Any, change: Change) -> None:
        document = self._current(client, "get_bucket_policy", "Policy", "NoSuchBucketPolicy")
        current = json.loads(document) if document else None
        wanted = tls_only_policy(self.arn) if self.tls_only else None
        if current == wanted:
            return
        if wanted is None:
            client.delete_bucket_policy(Bucket=self.name)
            change.details.append("bucket policy removed")
            return
        client.put_bucket_policy(Bucket=self.name, Policy=json.dumps(wanted))
        if change.action != "created":
            change.details.append("TLS-only bucket policy")

    def delete(self, ctx: ApplyContext) -> Change:
        client = ctx.client("s3")
        if not self._exists(client):
            return Change(self.label, "absent")
        if self.retain:
            return Change(self.label, "retained", ["production stage: delete it by hand"])
        removed = 0
        paginator = client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.name):
            doomed = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            for start in range(0, len(doomed), 1000):
                client.delete_objects(
                    Bucket=self.name, Delete={"Objects": doomed[start : start + 1000]}
                )
            removed += len(doomed)
        client.delete_bucket(Bucket=self.name)
        return Change(self.label, "deleted", [f"{removed} objects removed"] if removed else [])

    def cloudformation(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "BucketName": self.name,
            "PublicAccessBlockConfiguration": _PUBLIC_ACCESS_BLOCK,
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "OwnershipControls": _OWNERSHIP,
        }
        if self.expiration_days is not None:
            properties["LifecycleConfiguration"] = {
                "Rules": [
                    {
                        "Id": LIFECYCLE_RULE_ID,
                        "Status": "Enabled",
                        "ExpirationInDays": self.expiration_days,
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            }
        resources: dict[str, Any] = {
            self.logical_id: {
                "Type": "AWS::S3::Bucket",
                **_deletion_policy(self.retain),
                "Properties": properties,
            },
        }
        if self.tls_only:
            resources[self.policy_logical_id] = {
                "Type": "AWS::S3::BucketPolicy",
                **_deletion_policy(self.retain),
                "Properties": {
                    "Bucket": Attr(self.logical_id, "Ref").cloudformation(),
                    "PolicyDocument": tls_only_policy(self.arn),
                },
            }
        return resources

    def outputs(self) -> dict[str, Any]:
        return {}


def contains(current: Any, wanted: Any) -> bool:
    """True when every field of `wanted` is present with the same value in `current`."""
    if isinstance(wanted, Mapping):
        return isinstance(current, Mapping) and all(
            contains(current.get(key), value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(current) == len(wanted)
            and all(contains(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return bool(current == wanted)


# --------------------------------------------------------------------------------------------
# SQS
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """A standard queue, encrypted with SQS-managed keys (no kms:* grants needed).

    `dead_letter` (another queue, applied first) receives a message once it has been received
    `max_receive_count` times without being deleted; `visibility_timeout_s` is how long a
    received message stays hidden from other consumers (None: the SQS default, 30 s).
    """

    logical_id: str
    name: str
    retention_s: int = 1_209_600  # 14 days, the maximum: time to notice and redrive
    visibility_timeout_s: int | None = None
    dead_letter: Attr | None = None
    max_receive_count: int = 3

    @property
    def label(self) -> str:
        return f"sqs queue {self.name}"

    def _attributes(self, ctx: ApplyContext) -> dict[str, str]:
        attributes = {
            "MessageRetentionPeriod": str(self.retention_s),
            "SqsManagedSseEnabled": "true",
        }
        if self.visibility_timeout_s is not None:
            attributes["VisibilityTimeout"] = str(self.visibility_timeout_s)
        if self.dead_letter is not None:
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": ctx.resolve(self.dead_letter),
                    "maxReceiveCount": self.max_receive_count,
                }
            )
        return attributes

    def _url(self, client: Any) -> str | None:
        try:
            return str(client.get_queue_url(QueueName=self.name)["QueueUrl"])
        except ClientError as error:
            if _missing(error, "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                return None
            raise

    def apply(self, ctx: ApplyContext) -> Change:
        client = ctx.client("sqs")
        change = Change(self.label, "unchanged")
        wanted = self._attributes(ctx)
        url = self._url(client)
        if url is None:
            url = str(client.create_queue(QueueName=self.name, Attributes=wanted)["QueueUrl"])
            change.action = "created"
        current = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        stale = {
            name: value
            for name, value in wanted.items()
            if not _same_queue_attribute(name, current.get(name), value)
        }
        if stale:
            client.set_queue_attributes(QueueUrl=url, Attributes=stale)
            if change.action != "created":
                change.action = "updated"
                change.details.extend(f"{name}={value}" for name, value in stale.items())
        ctx.attributes[self.logical_id] = {
            "Arn": str(current["QueueArn"]),
            "QueueUrl": url,
            "Ref": url,
        }
        return change

    def delete(self, ctx: ApplyContext) -> Change:
        client = ctx.client("sqs")
        url = self._url(client)
        if url is None:
            return Change(self.label, "absent")
        client.delete_queue(QueueUrl=url)
        return Change(self.label, "deleted")

    def cloudformation(self) -> dict[str, Any]:
        return {
            self.logical_id: {
                "Type": "AWS::SQS::Queue",
                "DeletionPolicy": "Delete",
                "UpdateReplacePolicy": "Delete",
                "Properties": self._cloudformation_properties(),
            }
        }

    def _cloudformation_properties(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "QueueName": self.name,
            "MessageRetentionPeriod": self.retention_s,
            "SqsManagedSseEnabled": True,
        }
        if self.visibility_timeout_s is not None:
            properties["VisibilityTimeout"] = self.visibility_timeout_s
        if self.dead_letter is not None:
            properties["RedrivePolicy"] = {
                "deadLetterTargetArn": self.dead_letter.cloudformation(),
                "maxReceiveCount": self.max_receive_count,
            }
        return properties

    def outputs(self) -> dict[str, Any]:
        return {
            f"{self.logical_id}Arn": {"Value": Attr(self.logical_id).cloudformation()},
            f"{self.logical_id}Url": {"Value": Attr(self.logical_id, "Ref").cloudformation()},
        }


def _same_queue_attribute(name: str, current: str | None, wanted: str) -> bool:
    """SQS returns a redrive policy as JSON of its own spelling: compare the values."""
    if current is None:
        return False
    if name == "RedrivePolicy":
        try:
            have = {key: str(value) for key, value in json.loads(current).items()}
        except ValueError:
            return False
        return have == {key: str(value) for key, value in json.loads(wanted).items()}
    return current == wanted


# --------------------------------------------------------------------------------------------
# Secrets Manager
# --------------------------------------------------------------------------------------------


MANAGED_BY_TAG: Final = "moovitamix:managed-by"
MANAGED_BY: Final = "infra.deploy"
"""Tag of a secret `Secret.apply` created (and `Secret.delete` may therefore remove)."""


@dataclass(frozen=True)
class Secret:
    """A credentials secret created with a random password and never overwritten afterwards.

    The value is generated here (script) or by CloudFormation (`GenerateSecretString`), never
    written in code or config, never printed. Operators put the real connection values in with
    `aws secretsmanager put-secret-value`; re-applying keeps them.

    A secret this code creates is tagged `MANAGED_BY_TAG`; `delete` removes only such a secret.
    One that already existed (the LocalStack init hook writes the PostgreSQL container's real
    password before any deploy) is used as it is and kept by `destroy`: deleting it would make
    the next deploy create a random password the database does not know.
    """

    logical_id: str
    name: str
    description: str
    username: str

    @property
    def label(self) -> str:
        return f"secret {self.name}"

    def _description(self, client: Any) -> dict[str, Any] | None:
        try:
            return dict(client.describe_secret(SecretId=self.name))
        except ClientError as error:
            if _missing(error, "ResourceNotFoundException"):
                return None
            raise

    def apply(self, ctx: ApplyContext) -> Change:
        client = ctx.client("secretsmanager")
        change = Change(self.label, "unchanged")
        current = self._description(client)
        if current is None:
            value = {"username": self.username, "password": secrets.token_urlsafe(32)}
            client.create_secret(
                Name=self.name,
                Description=self.description,
                SecretString=json.dumps(value),
                Tags=[{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}],
            )
            change.action = "created"
        else:
            if current.get("DeletedDate"):
                client.restore_secret(SecretId=self.name)
                change.details.append("restored from scheduled deletion")
            if current.get("Description", "") != self.description:
                client.update_secret(SecretId=self.name, Description=self.description)
                change.details.append("description")
            if change.details:
                change.action = "updated"
        arn = str((self._description(client) or {})["ARN"])
        ctx.attributes[self.logical_id] = {"Ref": arn}
        return change

    def delete(self, ctx: ApplyContext) -> Change:
        client = ctx.client("secretsmanager")
        current = self._description(client)
        if current is None:
            return Change(self.label, "absent")
        tags = {tag.get("Key"): tag.get("Value") for tag in current.get("Tags", [])}
        if tags.get(MANAGED_BY_TAG) != MANAGED_BY:
            return Change(
                self.label,
                "kept",
                ["not created by the deploy; remove it with `aws secretsmanager delete-secret`"],
            )
        client.delete_secret(SecretId=self.name, ForceDeleteWithoutRecovery=True)
        return Change(self.label, "deleted")

    def cloudformation(self) -> dict[str, Any]:
        return {
            self.logical_id: {
                "Type": "AWS::SecretsManager::Secret",
                "DeletionPolicy": "Delete",
                "UpdateReplacePolicy": "Delete",
                "Properties": {
                    "Name": self.name,
                    "Description": self.description,
                    "GenerateSecretString": {
                        "SecretStringTemplate": json.dumps({"username": self.username}),
                        "GenerateStringKey": "password",
                        "PasswordLength": 43,
                        "ExcludePunctuation": True,
                    },
                },
            }
        }

    def outputs(self) -> dict[str, Any]:
        return {f"{self.logical_id}Arn": {"Value": Attr(self.logical_id, "Ref").cloudformation()}}


# --------------------------------------------------------------------------------------------
# SNS
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    logical_id: str
    name: str

    @property
    def label(self) -> str:
        return f"sns topic {self.name}"

    def _arn(self, client: Any) -> str | None:
        for page in client.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                if topic["TopicArn"].rsplit(":", 1)[-1] == self.name:
                    return str(topic["TopicArn"])
        return None

    def apply(self, ctx: ApplyContext) -> Change:
        client = ctx.client("sns")
        change = Change(self.label, "unchanged")
        arn = self._arn(client)
        if arn is None:
            arn = str(client.create_topic(Name=self.name)["TopicArn"])
            change.action = "created"
        ctx.attributes[self.logical_id] = {"Ref": arn, "TopicArn": arn}
        return change

    def delete(self, ctx: ApplyContext) -> Change:
        client = ctx.client("sns")
        arn = self._arn(client)
        if arn is None:
            return Change(self.label, "absent")
        client.delete_topic(TopicArn=arn)
        return Change(self.label, "deleted")

    def cloudformation(self) -> dict[str, Any]:
        return {
            self.logical_id: {
                "Type": "AWS::SNS::Topic",
                "Properties": {"TopicName": self.name},
            }
        }

    def outputs(self) -> dict[str, Any]:
        return {f"{self.logical_id}Arn": {"Value": Attr(self.logical_id, "Ref").cloudformation()}}
