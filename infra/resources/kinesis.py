"""The Kinesis data stream, encrypted at rest with the AWS-managed key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infra.resources.base import (
    ApplyContext,
    Attr,
    Change,
    deletion_policy,
    error_is,
    wait_until,
)

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
            if error_is(error, "ResourceNotFoundException"):
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
                **deletion_policy(self.retain),
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
