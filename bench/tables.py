"""The benchmark's results printed as rich tables: the user's command vs the floor, the
harness, AWS calls, fan-out, the defaults sweep and the targets."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench.targets import NOT_MEASURED


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else NOT_MEASURED


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else NOT_MEASURED


def print_report(console: Console, results: dict[str, Any]) -> None:
    command = Table(title="the user's command (python -m localcloud run --json) vs the floor")
    for column in (
        "records/resource",
        "status",
        "verdict_s",
        "pipeline_s",
        "whole command s",
        "floor s",
        "floor / verdict_s",
        "floor / pipeline_s",
        "reconcile_s share",
        "reconcile calls / 1k rec",
    ):
        command.add_column(column, justify="right")
    for entry in results["sizes"]:
        run = entry.get("command")
        if not run:
            continue
        timings = run["timings"]
        share, calls = run["reconcile_share"], run["reconcile_calls_per_1000"]
        command.add_row(
            f"{entry['records_per_resource']:,}",
            run["status"],
            _seconds(timings["verdict_s"]),
            _seconds(timings["pipeline_s"]),
            f"{run['wall_s']:.1f}",
            f"{entry['floor']['seconds']:.1f}",
            _ratio(entry["verdict_ratio"]),
            _ratio(entry["pipeline_ratio"]),
            f"{share:.1%}" if share is not None else NOT_MEASURED,
            f"{calls:.1f}" if calls is not None else NOT_MEASURED,
        )
    console.print(command)
    missing = sorted(
        {key for e in results["sizes"] for key in (e.get("command") or {}).get("missing", [])}
    )
    if missing:
        console.print(f"[yellow]the command's summary lacks {', '.join(missing)}: not measured[/]")

    table = Table(title="harness (bench/sides.py) vs floor (records/s over every resource)")
    for column in (
        "records/resource",
        "mode",
        "pipeline rec/s",
        "floor rec/s",
        "ratio",
        "ingest peak MiB",
        "load peak MiB",
        "unchanged re-run s",
        "moto CPU s (pipe/floor)",
    ):
        table.add_column(column, justify="right")
    for entry in results["sizes"]:
        pipeline, floor, second = entry["pipeline"], entry["floor"], entry["second_run"]
        memory = pipeline["memory_mb"]
        table.add_row(
            f"{entry['records_per_resource']:,}",
            entry["mode"],
            f"{pipeline['records_per_s']:,.0f}",
            f"{floor['records_per_s']:,.0f}" if floor else "-",
            f"{entry['ratio']:.2f}" if entry["ratio"] is not None else "-",
            f"{memory['ingest_peak']:.0f}",
            f"{memory['load_peak']:.0f}" if entry["mode"] == "full" else "-",
            f"{second['seconds']:.1f}" if second else "-",
            f"{pipeline['cpu_s']['moto']:.1f} / {floor['cpu_s']['moto']:.1f}"
            if floor
            else f"{pipeline['cpu_s']['moto']:.1f} / -",
        )
    console.print(table)

    calls = Table(title="AWS API calls per 1,000 records (pipeline | floor)")
    calls.add_column("records/resource", justify="right")
    services = sorted(
        {service for entry in results["sizes"] for service in entry["calls_per_1000"]}
        | {
            service
            for entry in results["sizes"]
            for service in entry.get("floor_calls_per_1000", {})
        }
    )
    for service in services:
        calls.add_column(service, justify="right")
    for entry in results["sizes"]:
        floor_calls = entry.get("floor_calls_per_1000") or {}
        calls.add_row(
            f"{entry['records_per_resource']:,}",
            *(
                f"{entry['calls_per_1000'].get(service, 0):.1f} | "
                + (f"{floor_calls.get(service, 0):.1f}" if entry["floor"] else "-")
                for service in services
            ),
        )
    console.print(calls)

    fanout = results.get("fanout") or {}
    if fanout.get("runs"):
        fan = Table(
            title=f"fan-out: {fanout['records_per_resource']:,} records per resource, "
            f"{fanout['pages_per_worker']} pages per work item, "
            f"{fanout.get('api_latency_ms', 0):.0f} ms per API page"
        )
        for column in ("workers", "ingest s", "total s", "speed-up", "stored digest"):
            fan.add_column(column, justify="right")
        for run in fanout["runs"]:
            fan.add_row(
                str(run["workers"]),
                f"{run['ingest_seconds']:.1f}",
                f"{run['seconds']:.1f}",
                f"{fanout['speedup'][str(run['workers'])]:.2f}x",
                run["digest"][:12],
            )
        console.print(fan)

    writes = results.get("dynamodb_write_strategies")
    if writes:
        console.print(
            f"DynamoDB newest-wins writes ({writes['rows']} rows): read-compare-BatchWrite "
            f"{writes['read_compare_batch_write']['rows_per_s']:,.0f} rows/s, conditional "
            f"PutItem {writes['conditional_put']['rows_per_s']:,.0f} rows/s -> {writes['chosen']}"
        )
    for pg in results.get("postgres_write_strategies", []):
        console.print(
            f"PostgreSQL newest-wins writes ({pg['rows']} rows, {pg['batch']} per transaction): "
            f"COPY to staging + merge {pg['copy_staging_merge']['rows_per_s']:,.0f} rows/s, "
            f"unnest upsert {pg['unnest_upsert']['rows_per_s']:,.0f} rows/s -> {pg['chosen']}"
        )

    sweep = results.get("sweep")
    if sweep:
        swept = Table(
            title=f"defaults sweep: {sweep['records_per_resource']:,} records per resource, "
            f"one knob at a time, {sweep['metric']} of the user's command"
        )
        for column in ("knob", "value", "status", "verdict_s", "pipeline_s", "best"):
            swept.add_column(column, justify="right")
        for run in sweep["runs"]:
            best = sweep["best"].get(run["knob"], {})
            swept.add_row(
                run["knob"],
                str(run["value"]),
                run["status"],
                _seconds(run["timings"]["verdict_s"]),
                _seconds(run["timings"]["pipeline_s"]),
                ("best" + (" (beats the default)" if best.get("beats_default") else ""))
                if best.get("value") == run["value"]
                else "",
            )
        console.print(swept)

    targets = Table(title="targets")
    for column in ("target", "measured", "met"):
        targets.add_column(column)
    for target in results["targets"]:
        value = target["value"]
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        targets.add_row(
            target["name"], shown, "[green]yes[/]" if target["met"] else "[red bold]NO[/]"
        )
    console.print(targets)
