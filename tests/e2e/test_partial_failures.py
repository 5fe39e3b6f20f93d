"""Partial `batchItemFailures`, end to end: only the failed records come back, nothing is
written twice.

One DynamoDB BatchWriteItem of the load is refused (a botocore hook, the AWS boundary). The load
reports that entity group's records in `batchItemFailures`; the event-source mapping re-delivers
from the lowest of them, as Lambda does. Counted at the boundaries, never in pipeline code:
every record read from the stream (Kinesis GetRecords answers) and every row sent to DynamoDB
(BatchWriteItem PutRequests).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from chalicelib.model.contract import ENTITIES
from localcloud.chaos import Chaos
from localcloud.stack import LocalCloud
from localcloud.triggers.lambda_runtime import Handler

pytestmark = pytest.mark.e2e

RECORDS = 60
ENTITY_TABLES = tuple(f"-{entity}" for entity in ENTITIES)


def test_only_the_failed_records_are_redelivered_and_none_is_written_twice(tmp_path: Path) -> None:
    reads: Counter[tuple[str, str]] = Counter()  # (event id, sequence) -> times delivered
    entity_of: dict[tuple[str, str], str] = {}  # (event id, sequence) -> entity
    puts: Counter[tuple[str, bytes]] = Counter()  # (table, key) -> PutRequests sent
    refused: list[tuple[str, bytes]] = []

    owed: set[tuple[str, str]] = set()  # what Lambda re-delivers after the load's answers

    def count_deliveries(handler: Handler) -> Handler:
        def load(event: dict[str, Any], context: Any) -> Any:
            delivered = [
                (record["eventID"], record["kinesis"]["sequenceNumber"])
                for record in event["Records"]
            ]
            for record, read in zip(event["Records"], delivered, strict=True):
                reads[read] += 1
                entity_of[read] = record["kinesis"]["partitionKey"].split(":", 1)[0]
            response = handler(event, context)
            failed = [int(f["itemIdentifier"]) for f in response.get("batchItemFailures", [])]
            if failed:  # Lambda resumes the shard at the lowest failed sequence number
                owed.update(read for read in delivered if int(read[1]) >= min(failed))
            return response

        return load

    trigger = Chaos({})
    trigger.load_wrappers.append(count_deliveries)

    def refuse_first_tracks_write(params: dict[str, Any], **_: Any) -> None:
        for table, requests in params.get("RequestItems", {}).items():
            keys = [
                (table, orjson.dumps(request["PutRequest"]["Item"].get("id")))
                for request in requests
                if "PutRequest" in request
            ]
            if table.endswith("-tracks") and not refused:
                refused.extend(keys)
                raise ClientError(
                    {"Error": {"Code": "ValidationException", "Message": "injected refusal"}},
                    "BatchWriteItem",
                )
        for table, requests in params.get("RequestItems", {}).items():
            if not table.endswith(ENTITY_TABLES):
                continue  # the run's own bookkeeping (page ledger) is not a stored row
            for request in requests:
                item = request["PutRequest"]["Item"]
                key = {name: item[name] for name in ("id", "user_id", "created_at") if name in item}
                puts[(table, orjson.dumps(key))] += 1

    with LocalCloud(
        tmp_path / "state",
        records=RECORDS,
        seed=2,
        extra_env={"PIPELINE_PAGE_SIZE": "20", "PIPELINE_BATCH_SIZE": "40"},
        chaos=trigger,
    ) as cloud:
        dynamodb = aws.client("dynamodb")
        dynamodb.meta.events.register(
            "before-parameter-build.dynamodb.BatchWriteItem", refuse_first_tracks_write
        )
        try:
            report = cloud.run()
        finally:
            dynamodb.meta.events.unregister(
                "before-parameter-build.dynamodb.BatchWriteItem", refuse_first_tracks_write
            )

    assert report.status == "succeeded", report.errors
    assert refused, "the refusal was never injected"
    # the load counted what DynamoDB refused as failed (a metric, read back from CloudWatch)
    assert report.metrics.get("RecordsFailed", 0) >= len(refused)
    for entity in ENTITIES:
        counts = report.entities[entity]
        assert counts["stored"] == {"dynamodb": RECORDS, "postgres": RECORDS}, entity
    # re-delivery happened, but not of the whole stream: exactly the records of the failed
    # batch from the lowest failed sequence number on, each once more (the refused records,
    # and those after them in that batch that had been written: these must not be written a
    # second time); nothing before them, nothing of another batch
    again = {key for key, times in reads.items() if times > 1}
    assert again
    assert again == owed
    assert {reads[key] for key in again} == {2}
    assert len(again) < len(reads)
    assert {entity_of[key] for key in again} >= {"tracks"}
    assert len(again) >= len(refused)
    # ... and every row reached DynamoDB exactly once, the refused ones included
    assert puts
    assert max(puts.values()) == 1
    assert sum(1 for table, _ in puts if table.endswith("-tracks")) == RECORDS
    assert len(puts) == 3 * RECORDS
