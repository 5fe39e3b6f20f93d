"""The moto server the local cloud runs: moto, with schedule rules that no longer swallow put
events (`_send_to_targets`), event-source mappings that moto records but does not run itself
(`_create_event_source_mapping`), and moto's costs that grow with the data cut down:
- the Kinesis shard (`moto_kinesis`): O(1) per record instead of O(records in the shard), and
  puts that cannot lose a record under concurrency;
- DynamoDB's answers (`moto_dynamodb_wire`): items written straight to the wire, index items
  projected without a round trip;
- DynamoDB's Query (`moto_dynamodb_query`): sorted once per item, an index read back in O(page)
  per page;
- every request (`moto_requests`): the service found once per host, not by listing moto's
  package; an account's backend without the global lock once it exists; only failed
  requests in the access log.
Each is checked against stock moto in tests/integration/test_moto_server.py.

Run as `python -m localcloud.emulators.moto_server -H HOST -p PORT` (the arguments of
`moto.server`).
With `LOCALCLOUD_MOTO_THREADED=0` it serves one request at a time: moto's work is pure Python
under one interpreter lock, so its threads only add lock hand-offs (measured: ~20 % of its CPU
under the pipeline's concurrent calls). The benchmark uses that mode; everything else keeps
moto's default threaded server, which long polls need.

The cyclic garbage collector runs less often here (`COLLECTOR_THRESHOLDS`): moto keeps every
stored item and record as many small long-lived objects, and every answer allocates thousands
more, so with Python's default thresholds the collector ran every few hundred allocations and
was a third of moto's time reading a run back (measured in-process: a 20,000-row index read
from 0.62 s to 0.42 s). Nothing moto keeps depends on the collector; the cycles a request
leaves are still freed, in larger batches.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from moto.awslambda.models import EventSourceMapping, LambdaBackend
from moto.events.models import Rule

from localcloud.emulators import (
    moto_dynamodb_query,
    moto_dynamodb_wire,
    moto_kinesis,
    moto_requests,
)

COLLECTOR_THRESHOLDS = (50_000, 20, 100)
"""`gc.set_threshold` of the moto server: allocations before a young collection, young
collections before a middle one, middle ones before a full one."""
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


def apply() -> None:
    """Patch moto's Kinesis shard, DynamoDB read path, request handling, schedule rules and
    mappings here."""
    moto_kinesis.apply()
    moto_dynamodb_wire.apply()
    moto_dynamodb_query.apply()
    moto_requests.apply()
    Rule.send_to_targets = _send_to_targets  # type: ignore[method-assign]
    LambdaBackend.create_event_source_mapping = _create_event_source_mapping  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    apply()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    import moto.server

    if os.environ.get("LOCALCLOUD_MOTO_THREADED", "1") == "0":
        serve = moto.server.run_simple

        def run_single_threaded(*args: Any, **kwargs: Any) -> None:
            serve(*args, **{**kwargs, "threaded": False})

        moto.server.run_simple = run_single_threaded
    moto.server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
