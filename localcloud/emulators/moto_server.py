"""The moto server, with moto's quadratic Kinesis shard operations made constant-time, schedule
rules that no longer swallow put events (`_send_to_targets`) and event-source mappings that moto
records but does not run itself (`_create_event_source_mapping`).

moto keeps a shard's records in an ordered dict keyed by consecutive sequence numbers, but it
finds the newest one with `list(keys)[-1]` (once per *record* put) and serves `GetRecords` by
walking the shard from its first record (once per call). Both cost O(records in the shard), so
a stream of n records costs O(n^2): 1M records never finish. Kinesis itself costs the same per
record whatever the stream holds, so these two methods are replaced by equivalents that jump
straight to the position; the results are identical (checked in tests/test_moto_server.py).

moto's `Shard.put_record` is also not safe for concurrency (its own comment says so): two
PutRecords served at once by the threaded server can draw the same sequence number, and one
record silently replaces the other. Concurrent producers (the fan-out workers) lost records
that way (found by the run reconciliation), so shard reads and writes take one lock here.

Run as `python -m localcloud.emulators.moto_server -H HOST -p PORT` (the arguments of
`moto.server`).
With `LOCALCLOUD_MOTO_THREADED=0` it serves one request at a time: moto's work is pure Python
under one interpreter lock, so its threads only add lock hand-offs (measured: ~20 % of its CPU
under the pipeline's concurrent calls). The benchmark uses that mode; everything else keeps
moto's default threaded server, which long polls need.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from moto.awslambda.models import EventSourceMapping, LambdaBackend
from moto.events.models import Rule
from moto.kinesis.models import Shard

_original_get_records = Shard.get_records
_original_max = Shard.get_max_sequence_number
_original_min = Shard.get_min_sequence_number
_original_put_record = Shard.put_record
_shard_lock = threading.RLock()
_original_send_to_targets = Rule.send_to_targets
_original_create_mapping = LambdaBackend.create_event_source_mapping


def _create_event_source_mapping(self: LambdaBackend, spec: dict[str, Any]) -> EventSourceMapping:
    """Record the mapping, but never run it: moto would invoke the function itself (in Docker,
    which is absent) on every SendMessage/PutRecords, consuming and failing the records. The
    local cloud's drivers are the Lambda service; they read the mapping back and run it."""
    from moto.kinesis.models import kinesis_backends
    from moto.sqs.models import sqs_backends

    mapping = _original_create_mapping(self, spec)
    sources = [
        *sqs_backends[self.account_id][self.region_name].queues.values(),
        *kinesis_backends[self.account_id][self.region_name].streams.values(),
    ]
    for source in sources:
        registry = source.lambda_event_source_mappings  # type: ignore[attr-defined]
        for key in [key for key, value in registry.items() if value is mapping]:
            del registry[key]
    return mapping


def _send_to_targets(self: Rule, *args: Any, **kwargs: Any) -> None:
    """A schedule rule (no event pattern) matches no put event, as on AWS; moto matches it to
    every event and then fails on its Lambda target (`NotImplementedError`)."""
    if self.scheduled_expression and not self.event_pattern._raw_pattern:
        return
    _original_send_to_targets(self, *args, **kwargs)


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
    Rule.send_to_targets = _send_to_targets  # type: ignore[method-assign]
    LambdaBackend.create_event_source_mapping = _create_event_source_mapping  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    apply()
    import moto.server

    if os.environ.get("LOCALCLOUD_MOTO_THREADED", "1") == "0":
        serve = moto.server.run_simple

        def run_single_threaded(*args: Any, **kwargs: Any) -> None:
            serve(*args, **{**kwargs, "threaded": False})

        moto.server.run_simple = run_single_threaded
    moto.server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
