"""The dead-letter store: every record that can never be stored, with its reason.

Quarantined records go to S3 (no size limit, unlike SQS), one object per record, under
`<run_id>/<entity>/<origin>.json`. The origin is unique and stable for a record (the page and
position for the ingest side, the shard and sequence number for the load side), so a re-delivered
record lands on the same object and counting objects counts records exactly once.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

UNATTRIBUTED_RUN = "unattributed"
"""Run id for stream records too broken to say which run produced them."""


@dataclass(frozen=True, slots=True)
class QuarantinedRecord:
    run_id: str
    entity: str
    origin: str
    reason: str
    payload: bytes

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "run_id": self.run_id,
            "entity": self.entity,
            "origin": self.origin,
            "reason": self.reason,
            "payload_base64": base64.b64encode(self.payload).decode(),
        }
        try:
            document["payload"] = orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            document["payload"] = None
        return orjson.dumps(document)

    @classmethod
    def from_json(cls, data: bytes) -> QuarantinedRecord:
        document = orjson.loads(data)
        return cls(
            run_id=document["run_id"],
            entity=document["entity"],
            origin=document["origin"],
            reason=document["reason"],
            payload=base64.b64decode(document["payload_base64"]),
        )

    @property
    def key(self) -> str:
        return f"{self.run_id}/{self.entity}/{self.origin}.json"


class Quarantine:
    """Writes and lists quarantined records in one bucket."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put(self, record: QuarantinedRecord) -> bool:
        """Store the record once; False when it is already there (a re-delivered record).

        The conditional write (`If-None-Match: *`) tells the caller whether to count it, so a
        batch re-delivered with its poison does not count that poison twice in the manifest.
        """
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=record.key,
                Body=record.to_json(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "PreconditionFailed":
                return False
            raise
        return True

    def keys(self, run_id: str | None = None) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{run_id}/" if run_id else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def count_by_entity(self, run_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in self.keys(run_id):
            entity = key.split("/")[1]
            counts[entity] = counts.get(entity, 0) + 1
        return counts

    def records(self, run_id: str | None = None) -> Iterator[QuarantinedRecord]:
        for key in self.keys(run_id):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            yield QuarantinedRecord.from_json(body)

    def delete(self, record: QuarantinedRecord) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=record.key)
