"""`python -m bench.markdown RESULT.json`: the Markdown tables of docs/performance.md."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson


def render(results: dict[str, Any]) -> str:
    lines = [
        "| records/resource | mode | pipeline rec/s | floor rec/s | ratio | ingest peak MiB "
        "(baseline) | load peak MiB | moto CPU s pipeline / floor | unchanged re-run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in results["sizes"]:
        pipeline, floor, second = entry["pipeline"], entry["floor"], entry["second_run"]
        memory = pipeline["memory_mb"]
        rerun = (
            f"{second['seconds']:.0f} s, {second['records_per_s']:,.0f} rec/s" if second else "-"
        )
        lines.append(
            f"| {entry['records_per_resource']:,} | {entry['mode']} | "
            f"{pipeline['records_per_s']:,.0f} | "
            + (f"{floor['records_per_s']:,.0f}" if floor else "-")
            + f" | {entry['ratio'] if entry['ratio'] is not None else '-'} | "
            f"{memory['ingest_peak']:.0f} ({memory['ingest_baseline']:.0f}) | "
            + (f"{memory['load_peak']:.0f}" if entry["mode"] == "full" else "-")
            + f" | {pipeline['cpu_s']['moto']:.1f} / "
            + (f"{floor['cpu_s']['moto']:.1f}" if floor else "-")
            + f" | {rerun} |"
        )
    lines += ["", "AWS API calls per 1,000 records (pipeline / floor):", ""]
    services = sorted(
        {s for entry in results["sizes"] for s in entry["calls_per_1000"]}
        | {s for entry in results["sizes"] for s in entry.get("floor_calls_per_1000") or {}}
    )
    lines.append("| records/resource | " + " | ".join(services) + " |")
    lines.append("| --- |" + " --- |" * len(services))
    for entry in results["sizes"]:
        floor_calls = entry.get("floor_calls_per_1000") or {}
        cells = [
            f"{entry['calls_per_1000'].get(s, 0):.1f} / "
            + (f"{floor_calls.get(s, 0):.1f}" if entry["floor"] else "-")
            for s in services
        ]
        lines.append(f"| {entry['records_per_resource']:,} | " + " | ".join(cells) + " |")
    lines += ["", "Calls by operation, pipeline (ingest side + load side):", ""]
    for entry in results["sizes"]:
        calls: dict[str, int] = {}
        for side in entry["pipeline"]["aws"].values():
            for name, count in side.get("calls", {}).items():
                calls[name] = calls.get(name, 0) + count
        listed = ", ".join(f"{name} {count:,}" for name, count in sorted(calls.items()))
        lines.append(f"- {entry['records_per_resource']:,} ({entry['mode']}): {listed}")
    fanout = results.get("fanout") or {}
    if fanout.get("runs"):
        lines += [
            "",
            f"Fan-out, {fanout['records_per_resource']:,} records per resource, "
            f"{fanout['pages_per_worker']} pages per work item, "
            f"{fanout.get('api_latency_ms', 0):.0f} ms per API page:",
            "",
            "| workers | work items | ingest s | total s | ingest speed-up | stored digest |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for run in fanout["runs"]:
            lines.append(
                f"| {run['workers']} | {run['work_items']} | {run['ingest_seconds']:.1f} | "
                f"{run['seconds']:.1f} | {fanout['speedup'][str(run['workers'])]:.2f}x | "
                f"`{run['digest'][:16]}` |"
            )
    writes = results.get("dynamodb_write_strategies")
    if writes:
        lines += [
            "",
            f"DynamoDB newest-wins, {writes['rows']:,} rows: read-compare-BatchWrite "
            f"{writes['read_compare_batch_write']['rows_per_s']:,.0f} rows/s, conditional "
            f"PutItem {writes['conditional_put']['rows_per_s']:,.0f} rows/s.",
        ]
    for pg in results.get("postgres_write_strategies", []):
        lines += [
            "",
            f"PostgreSQL newest-wins, {pg['rows']:,} rows, {pg['batch']} per transaction: "
            f"COPY into a staging table then one merge (the sink) "
            f"{pg['copy_staging_merge']['rows_per_s']:,.0f} rows/s, one upsert from unnest "
            f"{pg['unnest_upsert']['rows_per_s']:,.0f} rows/s.",
        ]
    lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
    for target in results["targets"]:
        value = target["value"]
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        lines.append(f"| {target['name']} | `{shown}` | {'yes' if target['met'] else '**NO**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    print(render(orjson.loads(Path(args[0]).read_bytes())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
