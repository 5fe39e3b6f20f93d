"""Counts every AWS API call a process makes, per service and operation, with a botocore hook.

boto3 and PynamoDB both create their clients through `botocore.session.Session.create_client`;
wrapping it registers a `before-parameter-build` handler on every client of the process, so calls
made by the pipeline's own code, by PynamoDB and by the bench itself are all counted, and
nothing in `chalicelib/` has to know. The event fires once per API call (not per HTTP retry)
and carries the call's parameters, so the size of every PutRecords call is seen too, and the
table of every DynamoDB call (the unchanged re-run may write bookkeeping, never data rows).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import botocore.session

MAX_PUT_RECORDS_BYTES = 5 * 1024 * 1024


@dataclass
class CallCounter:
    """API calls per `service.Operation`, and what every PutRecords call carried."""

    calls: Counter[str] = field(default_factory=Counter)
    dynamodb_tables: Counter[str] = field(default_factory=Counter)
    """DynamoDB calls per `Operation table` (a BatchWriteItem counts once per table it names)."""
    put_records_calls: int = 0
    put_records_records: int = 0
    put_records_bytes: int = 0
    put_records_max_records: int = 0
    put_records_max_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.endpoint_prefix
        name = f"{service}.{model.name}"
        with self._lock:
            self.calls[name] += 1
            if service == "dynamodb":
                for table in _tables(params):
                    self.dynamodb_tables[f"{model.name} {table}"] += 1
            if name == "kinesis.PutRecords":
                records = params.get("Records", [])
                size = sum(
                    len(record.get("Data", b"")) + len(str(record.get("PartitionKey", "")).encode())
                    for record in records
                )
                self.put_records_calls += 1
                self.put_records_records += len(records)
                self.put_records_bytes += size
                self.put_records_max_records = max(self.put_records_max_records, len(records))
                self.put_records_max_bytes = max(self.put_records_max_bytes, size)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(sorted(self.calls.items())),
                "dynamodb_tables": dict(sorted(self.dynamodb_tables.items())),
                "put_records": {
                    "calls": self.put_records_calls,
                    "records": self.put_records_records,
                    "bytes": self.put_records_bytes,
                    "max_records": self.put_records_max_records,
                    "max_bytes": self.put_records_max_bytes,
                },
            }


def _tables(params: dict[str, Any]) -> list[str]:
    """The tables a DynamoDB call names: `TableName`, or the keys of `RequestItems`."""
    if "TableName" in params:
        return [str(params["TableName"])]
    items = params.get("RequestItems")
    return [str(table) for table in items] if isinstance(items, dict) else []


_installed: CallCounter | None = None


def install() -> CallCounter:
    """Count the calls of every botocore client created from now on in this process."""
    global _installed
    if _installed is not None:
        return _installed
    counter = CallCounter()
    original = botocore.session.Session.create_client

    def create_client(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        client.meta.events.register("before-parameter-build", counter.on_call)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    _installed = counter
    return counter


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the `as_dict()` of several processes."""
    calls: Counter[str] = Counter()
    tables: Counter[str] = Counter()
    put = {"calls": 0, "records": 0, "bytes": 0, "max_records": 0, "max_bytes": 0}
    for part in parts:
        calls.update(part.get("calls", {}))
        tables.update(part.get("dynamodb_tables", {}))
        other = part.get("put_records", {})
        put["calls"] += other.get("calls", 0)
        put["records"] += other.get("records", 0)
        put["bytes"] += other.get("bytes", 0)
        put["max_records"] = max(put["max_records"], other.get("max_records", 0))
        put["max_bytes"] = max(put["max_bytes"], other.get("max_bytes", 0))
    return {
        "calls": dict(sorted(calls.items())),
        "dynamodb_tables": dict(sorted(tables.items())),
        "put_records": put,
    }
