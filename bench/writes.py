"""DynamoDB newest-wins write strategies, measured on the emulator: which one the sink uses.

* `read_compare_batch_write`: the sink's own strategy, one BatchGetItem per 100 keys, then
  BatchWriteItem of 25 for the newer versions only (safe because one shard has one consumer);
* `conditional_put`: one PutItem per record with a condition on the stored version, the usual
  way to keep newest-wins without reading first.

Both write the same number of distinct users (different keys, same table) in one local cloud.
"""

from __future__ import annotations

import time
from typing import Any

from chalicelib.contract import Envelope, validate_item
from chalicelib.settings import Settings
from chalicelib.sinks.dynamodb import DynamoDBSink, UserRow, to_row
from localcloud.fakeapi import generate_item


def _envelopes(start: int, count: int) -> list[Envelope]:
    items = (generate_item("users", index, 10 * (start + count), 0) for index in range(count))
    return [
        Envelope(
            entity="users",
            run_id="bench",
            fetched_at="2026-01-01T00:00:00+00:00",
            item=validate_item("users", {**item, "id": start + position}),
        )
        for position, item in enumerate(items)
    ]


def measure(settings: Settings, rows: int, batch: int = 500) -> dict[str, Any]:
    """Rows per second of each strategy on the current endpoint."""
    sink = DynamoDBSink(settings)
    envelopes = _envelopes(10_000_000, rows)
    started = time.perf_counter()
    for start in range(0, rows, batch):
        sink.write("users", envelopes[start : start + batch])
    batch_s = time.perf_counter() - started

    envelopes = _envelopes(20_000_000, rows)
    started = time.perf_counter()
    for envelope in envelopes:
        row = to_row("users", envelope)
        # PynamoDB's condition on the stored version; timestamps compare as strings here,
        # which is only right when every version prints the same fraction digits
        row.save(condition=UserRow.id.does_not_exist() | (UserRow.updated_at < row.updated_at))
    conditional_s = time.perf_counter() - started
    return {
        "rows": rows,
        "read_compare_batch_write": {
            "seconds": round(batch_s, 3),
            "rows_per_s": round(rows / batch_s, 1),
        },
        "conditional_put": {
            "seconds": round(conditional_s, 3),
            "rows_per_s": round(rows / conditional_s, 1),
        },
        "chosen": "read_compare_batch_write"
        if batch_s <= conditional_s
        else "conditional_put (change the sink!)",
    }
