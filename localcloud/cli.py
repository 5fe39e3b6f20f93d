"""`python -m localcloud`: run the pipeline on the embedded local cloud, no Docker needed."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from localcloud.stack import LocalCloud, RunReport


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud",
        description=(
            "The embedded local cloud: a moto server for AWS, a MooVitamix-compatible fake API "
            "and a driver that fires the schedule and the Kinesis trigger the way AWS does."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="start the local cloud, run one scheduled ingestion, report and stop",
        description=(
            "Start the local cloud, fire the ingestion schedule once, drive the Kinesis "
            "trigger until the stream is drained, then read the counts back from the stores. "
            "Exits 0 only when every fetched record is stored or quarantined."
        ),
    )
    run.add_argument(
        "--api-url",
        help="read this MooVitamix API (e.g. http://127.0.0.1:8000) instead of the built-in one",
    )
    run.add_argument(
        "--records", type=int, default=1000, help="rows per resource in the built-in API (1000)"
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the built-in API's data (0)")
    run.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    run.add_argument(
        "--dump", type=Path, metavar="DIR", help="write DIR/<sink>/<entity>.jsonl of stored rows"
    )
    run.add_argument("--shards", type=int, default=2, help="Kinesis shards of the stream (2)")
    run.add_argument(
        "--workers", type=int, default=2, help="concurrent fan-out workers (SQS trigger) (2)"
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        help="where logs of the run are kept (default: a new folder under .localcloud/)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return command_run(args)
    return 2  # pragma: no cover - argparse enforces the command


def command_run(args: argparse.Namespace) -> int:
    if args.records < 0:
        print("--records must be >= 0", file=sys.stderr)
        return 2
    Path(".localcloud").mkdir(exist_ok=True)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="run-", dir=".localcloud"))
    console = Console(stderr=args.json)
    cloud = LocalCloud(
        state_dir,
        api_url=args.api_url,
        records=args.records,
        seed=args.seed,
        shard_count=args.shards,
        workers=args.workers,
    )
    with cloud:
        if args.json:
            report = cloud.run()
        else:
            console.print(
                f"[bold]local cloud up[/] in {cloud.started_s:.1f} s: moto at {cloud.moto.url}, "
                f"API at {cloud.settings.api_url}"
            )
            report = _run_with_progress(cloud, console)
        if args.dump:
            cloud.dump(args.dump)
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_report(console, report, cloud)
        if args.dump:
            console.print(f"stored rows dumped to {args.dump}/")
    return 0 if report.status == "succeeded" else 1


def _run_with_progress(cloud: LocalCloud, console: Console) -> RunReport:
    columns = (
        TextColumn("{task.description:<15}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("fetched {task.fields[fetched]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            entity: progress.add_task(entity, total=None, fetched=0)
            for entity in cloud.settings.resource_list
        }

        def update(step: str, entity: str, count: int, total: int | None) -> None:
            task = tasks.get(entity)
            if task is None:
                return
            if step == "fetched":
                progress.update(task, fetched=count, total=total)
            else:
                progress.update(task, completed=count)

        report = cloud.run(update)
        for entity, task in tasks.items():
            counts = report.entities.get(entity, {})
            progress.update(task, total=counts.get("fetched", 0), completed=_loaded(counts))
    return report


def _loaded(counts: dict[str, Any]) -> int:
    stored = counts.get("stored", {})
    return int(min(stored.values(), default=0)) + int(counts.get("quarantined", 0))


def _print_report(console: Console, report: RunReport, cloud: LocalCloud) -> None:
    sinks = sorted({sink for counts in report.entities.values() for sink in counts["stored"]})
    table = Table(title=f"run {report.run_id}")
    table.add_column("resource")
    for column in ("fetched", "published", "unchanged", "quarantined"):
        table.add_column(column, justify="right")
    for sink in sinks:
        table.add_column(f"written {sink}", justify="right")
        table.add_column(f"stored {sink}", justify="right")
    for entity, counts in report.entities.items():
        row = [
            entity,
            str(counts["fetched"]),
            str(counts["published"]),
            str(counts.get("unchanged", 0)),
            str(counts["quarantined"]),
        ]
        for sink in sinks:
            row += [str(counts["written"].get(sink, 0)), str(counts["stored"].get(sink, 0))]
        table.add_row(*row)
    console.print(table)
    colour = "green" if report.status == "succeeded" else "red"
    console.print(
        f"[{colour} bold]{report.status}[/] in {report.timings['pipeline_s']:.1f} s "
        f"(total {report.timings['total_s']:.1f} s); Lambda logs: {cloud.log_path}"
    )
    for error in report.errors:
        console.print(f"[red]- {error}[/]")
