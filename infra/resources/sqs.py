"""SQS queues: the work queue, its dead-letter queue and the load's on-failure queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infra.resources.base import ApplyContext, Attr, Change, error_is


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
            if error_is(error, "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
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
