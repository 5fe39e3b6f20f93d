"""moto's Kinesis shard, with its quadratic operations made constant-time and its puts locked.

moto keeps a shard's records in an ordered dict keyed by consecutive sequence numbers, but it
finds the newest one with `list(keys)[-1]` (once per *record* put) and serves `GetRecords` by
walking the shard from its first record (once per call). Both cost O(records in the shard), so
a stream of n records costs O(n^2): 1M records never finish. Kinesis itself costs the same per
record whatever the stream holds, so these two methods are replaced by equivalents that jump
straight to the position; the results are identical (checked in
tests/integration/test_moto_server.py).

moto's `Shard.put_record` is also not safe for concurrency (its own comment says so): two
PutRecords served at once by the threaded server can draw the same sequence number, and one
record silently replaces the other. Concurrent producers (the fan-out workers) lost records
that way (found by the run reconciliation), so shard reads and writes take one lock here.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.kinesis.models import Shard

_original_get_records = Shard.get_records
_original_max = Shard.get_max_sequence_number
_original_min = Shard.get_min_sequence_number
_original_put_record = Shard.put_record
_shard_lock = threading.RLock()


def _locked_put_record(self: Shard, *args: Any, **kwargs: Any) -> str:
    with _shard_lock:
        return _original_put_record(self, *args, **kwargs)


def _max_sequence_number(self: Shard) -> int:
    return next(reversed(self.records)) if self.records else 0


def _min_sequence_number(self: Shard) -> int:
    return next(iter(self.records)) if self.records else 0


def _get_records(
    self: Shard, last_sequence_id: str, limit: int | None
) -> tuple[list[Any], int, int]:
    """Same answer as moto's `Shard.get_records`, found by position instead of a scan."""
    with _shard_lock:
        return _get_records_unlocked(self, last_sequence_id, limit)


def _get_records_unlocked(
    self: Shard, last_sequence_id: str, limit: int | None
) -> tuple[list[Any], int, int]:
    records = self.records
    if not records:
        return _original_get_records(self, last_sequence_id, limit)
    first, newest = next(iter(records)), next(reversed(records))
    if newest - first + 1 != len(records):  # not consecutive: keep moto's own walk
        return _original_get_records(self, last_sequence_id, limit)
    last = int(last_sequence_id)
    start = max(last + 1, first)
    stop = newest if not limit else min(newest, start + limit - 1)
    results = [records[number] for number in range(start, stop + 1)]
    if not results:
        return [], last, 0
    behind_s = records[newest].created_at - results[-1].created_at
    return results, results[-1].sequence_number, int(behind_s * 1000)


def apply() -> None:
    """Patch moto's Kinesis shard in this process."""
    Shard.get_max_sequence_number = _max_sequence_number  # type: ignore[method-assign]
    Shard.get_min_sequence_number = _min_sequence_number  # type: ignore[method-assign]
    Shard.get_records = _get_records  # type: ignore[method-assign]
    Shard.put_record = _locked_put_record  # type: ignore[method-assign]
