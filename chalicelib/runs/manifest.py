"""Run manifests: one DynamoDB item per run with its counts at every step.

The ingest side writes what it fetched and published; the load side adds what it wrote, per
run id, with atomic `ADD` updates so concurrent shard consumers never lose an increment.
Counters are flat attributes named `<step>.<entity>` (for example `written.dynamodb.users`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class RunManifests:
    """Reads and updates the run manifest table."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def start(self, run_id: str, started_at: str, resources: list[str]) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                "run_id": {"S": run_id},
                "started_at": {"S": started_at},
                "status": {"S": "running"},
                "resources": {"S": ",".join(resources)},
            },
            ConditionExpression="attribute_not_exists(run_id)",
        )

    def add_counts(self, run_id: str, counts: Mapping[str, int]) -> None:
        """Atomically add to counters; zero counts are skipped."""
        nonzero = {name: value for name, value in counts.items() if value}
        if not nonzero:
            return
        names = {f"#c{i}": name for i, name in enumerate(nonzero)}
        values = {f":v{i}": {"N": str(value)} for i, value in enumerate(nonzero.values())}
        expression = "ADD " + ", ".join(f"#c{i} :v{i}" for i in range(len(nonzero)))
        self.client.update_item(
            TableName=self.table_name,
            Key={"run_id": {"S": run_id}},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def add_to_set(self, run_id: str, name: str, values: Sequence[str]) -> None:
        """Atomically add strings to a string-set attribute (schema drift field names)."""
        if not values:
            return
        self.client.update_item(
            TableName=self.table_name,
            Key={"run_id": {"S": run_id}},
            UpdateExpression="ADD #s :v",
            ExpressionAttributeNames={"#s": name},
            ExpressionAttributeValues={":v": {"SS": list(dict.fromkeys(values))}},
        )

    def set_fields(self, run_id: str, fields: Mapping[str, str]) -> None:
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": {"S": value} for i, value in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        self.client.update_item(
            TableName=self.table_name,
            Key={"run_id": {"S": run_id}},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The manifest as plain values (numbers as ints), or None when the run is unknown."""
        response = self.client.get_item(
            TableName=self.table_name, Key={"run_id": {"S": run_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return None if item is None else plain_item(item)


def plain_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest item's numbers as ints, strings as strings, string sets as sorted lists
    (other types are left out)."""
    plain: dict[str, Any] = {}
    for name, value in item.items():
        if "N" in value:
            plain[name] = int(value["N"])
        elif "S" in value:
            plain[name] = value["S"]
        elif "SS" in value:
            plain[name] = sorted(value["SS"])
    return plain


def schema_drift(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """`{entity: [unknown field, ...]}` a run's ingest reported (`chalicelib/ingest/drift.py`)."""
    return {
        name.removeprefix("schema_drift."): list(value)
        for name, value in sorted(manifest.items())
        if name.startswith("schema_drift.") and isinstance(value, list)
    }
