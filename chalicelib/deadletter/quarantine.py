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

REDRIVEN_PREFIX = "redriven/"
"""Where a redriven record's object moves (`redriven/<run_id>/<entity>/<origin>.json`), with
the key and version it was re-published as: the reconciler then looks for it in the stores."""


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


@dataclass(frozen=True, slots=True)
class RedriveMarker:
    """A quarantined record that was re-published: what it became, and when."""

    run_id: str
    entity: str
    origin: str
    key_parts: list[Any] | None
    updated_at: str | None
    redrive_id: str
    redriven_at: str


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

    def replace(self, record: QuarantinedRecord) -> None:
        """Overwrite a quarantined record: an operator's fix of its payload before a redrive."""
        self.client.put_object(
            Bucket=self.bucket,
            Key=record.key,
            Body=record.to_json(),
            ContentType="application/json",
        )

    def keys(self, run_id: str | None = None) -> Iterator[str]:
        """Keys of quarantined records (of one run, or `<run_id>/<entity>`); not redriven ones."""
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{run_id}/" if run_id else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].startswith(REDRIVEN_PREFIX):
                    yield obj["Key"]

    def get(self, key: str) -> QuarantinedRecord:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return QuarantinedRecord.from_json(body)

    def mark_redriven(
        self,
        record: QuarantinedRecord,
        *,
        key_parts: list[Any] | None,
        updated_at: str | None,
        redrive_id: str,
        redriven_at: str,
    ) -> None:
        """Move the record under `redriven/` with what it was re-published as."""
        document = orjson.loads(record.to_json())
        document["redriven"] = {
            "key": key_parts,
            "updated_at": updated_at,
            "redrive_id": redrive_id,
            "redriven_at": redriven_at,
        }
        self.client.put_object(
            Bucket=self.bucket,
            Key=REDRIVEN_PREFIX + record.key,
            Body=orjson.dumps(document),
            ContentType="application/json",
        )
        self.delete(record)

    def redriven(self, run_id: str, entity: str | None = None) -> Iterator[RedriveMarker]:
        prefix = f"{REDRIVEN_PREFIX}{run_id}/" + (f"{entity}/" if entity else "")
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = self.client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                document = orjson.loads(body)
                marker = document.get("redriven") or {}
                yield RedriveMarker(
                    run_id=document["run_id"],
                    entity=document["entity"],
                    origin=document["origin"],
                    key_parts=marker.get("key"),
                    updated_at=marker.get("updated_at"),
                    redrive_id=str(marker.get("redrive_id", "")),
                    redriven_at=str(marker.get("redriven_at", "")),
                )

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
