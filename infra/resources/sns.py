"""The SNS topic the alarms notify."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.resources.base import ApplyContext, Attr, Change


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
