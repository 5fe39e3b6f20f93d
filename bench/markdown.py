"""`python -m bench.markdown RESULT.json`: the Markdown tables of docs/performance.md (of a
`python -m bench` or a `python -m bench.sweep` results file)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

NOT_MEASURED = "not measured"


def _shown(value: float | None, spec: str = ".1f") -> str:
    return format(value, spec) if value is not None else NOT_MEASURED


def render_command(results: dict[str, Any]) -> list[str]:
    """The user's command against the floor, per size (sizes it did not run are left out)."""
    lines = [
        "| records/resource | status | verdict_s | pipeline_s | whole command s | floor s | "
        "floor / verdict_s | floor / pipeline_s | reconcile_s / verdict_s | reconcile calls "
        "per 1k records |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in results["sizes"]:
        run = entry.get("command")
        if not run:
            continue
        timings = run["timings"]
        lines.append(
            f"| {entry['records_per_resource']:,} | {run['status']} | "
            f"{_shown(timings['verdict_s'])} | {_shown(timings['pipeline_s'])} | "
            f"{run['wall_s']:.1f} | {entry['floor']['seconds']:.1f} | "
            f"{_shown(entry['verdict_ratio'], '.2f')} | {_shown(entry['pipeline_ratio'], '.2f')} | "
            f"{_shown(run['reconcile_share'], '.1%')} | "
            f"{_shown(run['reconcile_calls_per_1000'])} |"
        )
    missing = sorted(
        {
            key
            for entry in results["sizes"]
            for key in (entry.get("command") or {}).get("missing", [])
        }
    )
    if missing:
        lines += ["", f"Not in the command's JSON summary (not measured): {', '.join(missing)}."]
    commands = [entry["command"]["command"] for entry in results["sizes"] if entry.get("command")]
    if commands:
        lines += ["", f"Command (one per size): `{commands[0]}`."]
    return lines


def render_sweep(sweep: dict[str, Any]) -> list[str]:
    lines = [
        f"Defaults sweep, {sweep['records_per_resource']:,} records per resource, one knob at a "
        f"time around the defaults, compared on `{sweep['metric']}`:",
        "",
        "| knob | value | status | verdict_s | pipeline_s | whole command s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in sweep["runs"]:
        best = sweep["best"].get(run["knob"], {})
        mark = " **best**" if best.get("value") == run["value"] else ""
        default = " (default)" if sweep["defaults"].get(run["knob"]) == run["value"] else ""
        lines.append(
            f"| {run['knob']} | {run['value']}{default}{mark} | {run['status']} | "
            f"{_shown(run['timings']['verdict_s'])} | {_shown(run['timings']['pipeline_s'])} | "
            f"{run['wall_s']:.1f} |"
        )
    return lines


def render(results: dict[str, Any]) -> str:
    lines = [*render_command(results), ""]
    lines += [
        "Harness (`bench/sides.py`) against the same floor:",
        "",
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
    if results.get("sweep"):
        lines += ["", *render_sweep(results["sweep"])]
    lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
    for target in results["targets"]:
        value = target["value"]
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        lines.append(f"| {target['name']} | `{shown}` | {'yes' if target['met'] else '**NO**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    results = orjson.loads(Path(args[0]).read_bytes())
    if "sizes" not in results and "sweep" in results:  # a file of `python -m bench.sweep`
        print("\n".join(render_sweep(results["sweep"])))
        return 0
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
