"""Scale on paper: shards, Lambda concurrency and daily cost for 1M, 10M and 100M events a day.

`python -m bench.scale [--record-bytes N] [--window-s S]` prints the Markdown tables of
docs/performance.md. Every input is a named constant below (AWS limits, us-east-1 list
prices when this was written: check them before relying on a figure), so the arithmetic can
be re-done when one changes.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

# Kinesis Data Streams limits, per shard
SHARD_WRITE_RECORDS_S = 1000
SHARD_WRITE_BYTES_S = 1024 * 1024
SHARD_READ_BYTES_S = 2 * 1024 * 1024
KPL_AGGREGATE_BYTES = 1024 * 1024 - 1024  # one Kinesis record holds an aggregate up to ~1 MiB
PUT_PAYLOAD_UNIT = 25 * 1024

# Prices (us-east-1, USD)
SHARD_HOUR = 0.015
PUT_UNITS_MILLION = 0.014
LAMBDA_GB_S = 0.0000166667
LAMBDA_REQUESTS_MILLION = 0.20
DYNAMODB_WRU_MILLION = 0.625  # on-demand, after the November 2024 price cut
DYNAMODB_RRU_MILLION = 0.125

# The pipeline
LAMBDA_MEMORY_GB = 0.5
LOAD_BATCH = 500
INGEST_MS_PER_RECORD = 0.25
"""Ingest function time per record on Lambda: fetch, validate, look up, publish (assumed: 4x
its CPU per record on the bench machine, for network waits)."""
LOAD_MS_PER_RECORD = 0.6
"""Load function time per record on Lambda (assumed: ~2x its CPU per record on the bench)."""
WORKER_RECORDS_S = 2000
"""What one ingest worker publishes per second on AWS (assumed, network-bound)."""
PAGES_PER_WORKER = 2000
PAGE_SIZE = 100


@dataclass(frozen=True)
class Scale:
    events_per_day: int
    record_bytes: int
    window_s: int

    @property
    def rate(self) -> float:
        return self.events_per_day / self.window_s

    @property
    def bytes_rate(self) -> float:
        return self.rate * self.record_bytes

    @property
    def shards(self) -> int:
        by_records = math.ceil(self.rate / SHARD_WRITE_RECORDS_S)
        by_bytes = math.ceil(self.bytes_rate / SHARD_WRITE_BYTES_S)
        return max(1, by_records, by_bytes)

    @property
    def shards_aggregated(self) -> int:
        """With KPL aggregation only the byte limit counts (aggregates are few and large)."""
        return max(1, math.ceil(self.bytes_rate / SHARD_WRITE_BYTES_S))

    @property
    def workers(self) -> int:
        return max(1, math.ceil(self.rate / WORKER_RECORDS_S))

    @property
    def work_items(self) -> int:
        return max(1, math.ceil(self.events_per_day / (PAGES_PER_WORKER * PAGE_SIZE)))

    def kinesis_cost(self, aggregated: bool = False) -> float:
        shards = self.shards_aggregated if aggregated else self.shards
        per_unit = max(1, PUT_PAYLOAD_UNIT // self.record_bytes) if aggregated else 1
        units = self.events_per_day / per_unit
        # the stream runs at its peak size during the window and at 1 shard the rest of the day
        shard_hours = shards * self.window_s / 3600 + 1 * (86_400 - self.window_s) / 3600
        return shard_hours * SHARD_HOUR + units / 1e6 * PUT_UNITS_MILLION

    @property
    def lambda_cost(self) -> float:
        seconds = self.events_per_day * (INGEST_MS_PER_RECORD + LOAD_MS_PER_RECORD) / 1000
        requests = self.events_per_day / LOAD_BATCH + self.work_items
        return seconds * LAMBDA_MEMORY_GB * LAMBDA_GB_S + requests / 1e6 * LAMBDA_REQUESTS_MILLION

    @property
    def dynamodb_cost(self) -> float:
        """One write unit per row (<= 1 KB; the fingerprint rides in the row, whatever the
        sinks), half a read unit for each of the ingest's fingerprint look-up and the sink's
        version read (eventually consistent, <= 4 KB)."""
        writes = self.events_per_day
        reads = self.events_per_day * (0.5 + 0.5)
        return writes / 1e6 * DYNAMODB_WRU_MILLION + reads / 1e6 * DYNAMODB_RRU_MILLION


def render(record_bytes: int, window_s: int) -> str:
    scales = [Scale(n, record_bytes, window_s) for n in (1_000_000, 10_000_000, 100_000_000)]
    lines = [
        f"Inputs: {record_bytes} bytes per record (envelope included), the day's events "
        f"published within {window_s / 3600:g} h, {LAMBDA_MEMORY_GB * 1024:.0f} MB functions.",
        "",
        "| events/day | records/s | MiB/s | shards | shards with KPL aggregation | load "
        "concurrency | ingest workers (work items) | Kinesis $/day | with aggregation | "
        "Lambda $/day | DynamoDB $/day |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scale in scales:
        lines.append(
            f"| {scale.events_per_day:,} | {scale.rate:,.0f} | {scale.bytes_rate / 2**20:.2f} | "
            f"{scale.shards} | {scale.shards_aggregated} | {scale.shards} | "
            f"{scale.workers} ({scale.work_items}) | {scale.kinesis_cost():.2f} | "
            f"{scale.kinesis_cost(aggregated=True):.2f} | {scale.lambda_cost:.2f} | "
            f"{scale.dynamodb_cost:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument(
        "--record-bytes", type=int, default=400, help="bytes per stream record (400)"
    )
    parser.add_argument("--window-s", type=int, default=3600)
    args = parser.parse_args(argv)
    print(render(args.record_bytes, args.window_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
