"""Run manifests: one DynamoDB item per run with its counts at every step.

The ingest side writes what it fetched and published; the load side adds what it wrote, per
run id, with atomic `ADD` updates so concurrent shard consumers never lose an increment.
Counters are flat attributes named `<step>.<entity>` (for example `written.dynamodb.users`).

This module is the runs table's only client: the ingest's checkpoints and work items
(`chalicelib.runs.ledger.RunProgress`), the early verdict request and the reconciler's sweep
and verdicts all go through `RunManifests`, so every conditional update of a run is here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

WORK_DONE_IDS: Final = "work_done_ids"
"""String set of the work items a run's manifest has counted."""


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

    def begin(
        self, run_id: str, started_at: str, resources: Sequence[str]
    ) -> tuple[dict[str, Any], bool]:
        """Create the run's manifest, or find it when this invocation resumes the run; returns
        the manifest (after counting this invocation) and whether the run was resumed."""
        item: dict[str, Any] = {
            "run_id": {"S": run_id},
            "started_at": {"S": started_at},
            "status": {"S": "running"},
            "ingest_status": {"S": "running"},
            "resources": {"S": ",".join(resources)},
        }
        for resource in resources:
            item[f"checkpoint.{resource}"] = {"N": "0"}
        resumed = False
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(run_id)",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            resumed = True
        response = self.client.update_item(
            TableName=self.table_name,
            Key={"run_id": {"S": run_id}},
            UpdateExpression="ADD ingest_invocations :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="ALL_NEW",
        )
        return plain_item(response["Attributes"]), resumed

    def advance_checkpoint(
        self,
        run_id: str,
        resource: str,
        previous_checkpoint: int,
        checkpoint: int,
        counts: Mapping[str, int],
        *,
        complete: bool = False,
    ) -> bool:
        """Move `resource`'s checkpoint from `previous_checkpoint` to `checkpoint`, adding
        `counts`, in one conditional update; False when the stored checkpoint is not
        `previous_checkpoint` any more (another invocation works on the run)."""
        names = {"#cp": f"checkpoint.{resource}"}
        values: dict[str, Any] = {
            ":previous": {"N": str(previous_checkpoint)},
            ":checkpoint": {"N": str(checkpoint)},
        }
        sets = ["#cp = :checkpoint"]
        if complete:
            names["#done"] = f"complete.{resource}"
            values[":done"] = {"N": "1"}
            sets.append("#done = :done")
        adds = []
        for index, (name, value) in enumerate(counts.items()):
            if value:
                names[f"#c{index}"] = name
                values[f":c{index}"] = {"N": str(value)}
                adds.append(f"#c{index} :c{index}")
        expression = "SET " + ", ".join(sets)
        if adds:
            expression += " ADD " + ", ".join(adds)
        return self._update_if(
            run_id,
            UpdateExpression=expression,
            ConditionExpression="#cp = :previous",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def fan_out(self, run_id: str, resource: str, work_items: int, pages: int) -> tuple[int, int]:
        """Record that `resource` is split into `work_items` ranges planned over `pages` pages.

        Only the first invocation records it; a later one (a retry that crashed between this and
        the dispatch) gets the recorded plan back, so it sends the very same work items.
        Returns the recorded (work_items, pages).
        """
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"run_id": {"S": run_id}},
                UpdateExpression="SET #items = :items, #pages = :pages",
                ConditionExpression="attribute_not_exists(#items)",
                ExpressionAttributeNames={
                    "#items": f"work_items.{resource}",
                    "#pages": f"work_pages.{resource}",
                },
                ExpressionAttributeValues={
                    ":items": {"N": str(work_items)},
                    ":pages": {"N": str(pages)},
                },
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        manifest = self.get(run_id) or {}
        return (
            int(manifest.get(f"work_items.{resource}", work_items)),
            int(manifest.get(f"work_pages.{resource}", pages)),
        )

    def mark_dispatched(self, run_id: str, resource: str) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key={"run_id": {"S": run_id}},
            UpdateExpression="SET #d = :one",
            ExpressionAttributeNames={"#d": f"dispatched.{resource}"},
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    def work_item_done(self, run_id: str, work_id: str) -> bool:
        """Whether a work item was already counted (SQS delivers a message at least once)."""
        manifest = self.client.get_item(
            TableName=self.table_name,
            Key={"run_id": {"S": run_id}},
            ProjectionExpression="#ids",
            ExpressionAttributeNames={"#ids": WORK_DONE_IDS},
            ConsistentRead=True,
        ).get("Item", {})
        return work_id in manifest.get(WORK_DONE_IDS, {}).get("SS", [])

    def finish_work_item(
        self, run_id: str, resource: str, work_id: str, counts: Mapping[str, int]
    ) -> bool:
        """Add a finished work item's counts to the manifest, once per work item.

        Returns False when another delivery of the same item counted it already.
        """
        names = {"#ids": WORK_DONE_IDS, "#done": f"work_done.{resource}"}
        values: dict[str, Any] = {":id": {"S": work_id}, ":ids": {"SS": [work_id]}}
        values[":one"] = {"N": "1"}
        adds = ["#ids :ids", "#done :one"]
        for index, (name, value) in enumerate(counts.items()):
            if value:
                names[f"#c{index}"] = name
                values[f":c{index}"] = {"N": str(value)}
                adds.append(f"#c{index} :c{index}")
        return self._update_if(
            run_id,
            UpdateExpression="ADD " + ", ".join(adds),
            ConditionExpression="attribute_exists(run_id) AND NOT contains(#ids, :id)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def finish_run_if_complete(self, run_id: str, finished_at: str) -> bool:
        """Mark the run's ingestion published once every resource is complete.

        Both the ingest (after its own resources) and each worker (after its work item) call
        this after their last write; reading the manifest consistently after writing, the last
        one of them to finish sees everything complete. The update is conditional, so only one
        of them marks it, and never a run already declared failed.
        """
        manifest = self.get(run_id) or {}
        resources = [name for name in str(manifest.get("resources", "")).split(",") if name]
        for resource in resources:
            items = int(manifest.get(f"work_items.{resource}", 0))
            done = int(manifest.get(f"work_done.{resource}", 0))
            if not (manifest.get(f"complete.{resource}") or (items and done >= items)):
                return False
        return self._update_if(
            run_id,
            UpdateExpression="SET ingest_status = :published, ingest_finished_at = :at",
            ConditionExpression="NOT ingest_status IN (:published, :failed)",
            ExpressionAttributeValues={
                ":published": {"S": "published"},
                ":failed": {"S": "failed"},
                ":at": {"S": finished_at},
            },
        )

    def set_status_unless_final(self, run_id: str, status: str) -> None:
        """Record an ingest status that is not final (e.g. `fanned_out`) unless the run's
        ingestion is already published or failed (a worker may have finished it meanwhile)."""
        with contextlib.suppress(ClientError):
            self.client.update_item(
                TableName=self.table_name,
                Key={"run_id": {"S": run_id}},
                UpdateExpression="SET ingest_status = :status",
                ConditionExpression="NOT ingest_status IN (:published, :failed)",
                ExpressionAttributeValues={
                    ":status": {"S": status},
                    ":published": {"S": "published"},
                    ":failed": {"S": "failed"},
                },
            )

    def set_and_remove(
        self, run_id: str, fields: Mapping[str, Mapping[str, Any]], remove: str
    ) -> None:
        """Set typed attributes (`{"name": {"S": ...}}`) and remove one, in one update."""
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": value for i, value in enumerate(fields.values())}
        names["#remove"] = remove
        self.client.update_item(
            TableName=self.table_name,
            Key={"run_id": {"S": run_id}},
            UpdateExpression="SET "
            + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
            + " REMOVE #remove",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def scan(self, attributes: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Every run's `attributes` (DynamoDB-typed), one scan page at a time."""
        names = {f"#a{i}": name for i, name in enumerate(attributes)}
        paginator = self.client.get_paginator("scan")
        for response in paginator.paginate(
            TableName=self.table_name,
            ProjectionExpression=", ".join(names),
            ExpressionAttributeNames=names,
        ):
            yield from response.get("Items", [])

    def add_to_existing(self, run_id: str, name: str, count: int) -> dict[str, Any]:
        """Add `count` to counter `name` of an existing run; its manifest after the update
        (DynamoDB-typed). Raises ConditionalCheckFailedException for an unknown run."""
        return self.client.update_item(
            TableName=self.table_name,
            Key={"run_id": {"S": run_id}},
            UpdateExpression="ADD #name :n",
            ConditionExpression="attribute_exists(run_id)",
            ExpressionAttributeNames={"#name": name},
            ExpressionAttributeValues={":n": {"N": str(count)}},
            ReturnValues="ALL_NEW",
        )["Attributes"]

    def get_typed(self, run_id: str) -> dict[str, Any] | None:
        """A run's manifest as DynamoDB types it, read consistently."""
        return self.client.get_item(
            TableName=self.table_name, Key={"run_id": {"S": run_id}}, ConsistentRead=True
        ).get("Item")

    def set_once(self, run_id: str, name: str, value: str) -> bool:
        """Set `name` unless it is set already; False when it was."""
        return self._update_if(
            run_id,
            UpdateExpression="SET #name = :value",
            ConditionExpression="attribute_not_exists(#name)",
            ExpressionAttributeNames={"#name": name},
            ExpressionAttributeValues={":value": {"S": value}},
        )

    def _update_if(self, run_id: str, **arguments: Any) -> bool:
        """One conditional UpdateItem of the run's item: False when its condition fails."""
        try:
            self.client.update_item(
                TableName=self.table_name, Key={"run_id": {"S": run_id}}, **arguments
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

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
