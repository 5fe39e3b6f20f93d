"""DynamoDB tables (on-demand, point-in-time recovery) and their global secondary indexes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infra.resources.base import ApplyContext, Change, deletion_policy, error_is, wait_until


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
            if error_is(error, "ResourceNotFoundException"):
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
                if error_is(error, "ContinuousBackupsUnavailableException"):
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
                **deletion_policy(self.retain),
                "Properties": properties,
            }
        }

    def outputs(self) -> dict[str, Any]:
        return {}
