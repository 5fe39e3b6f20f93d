"""`python -m localcloud`: run the pipeline on the embedded local cloud, no Docker needed."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from localcloud.chaos import FAULTS, Chaos, ChaosSpecError
from localcloud.report import write_report
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
        "--workers",
        type=int,
        default=2,
        help="concurrent ingest_worker invocations for fanned-out resources (2)",
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        help="where logs of the run are kept (default: a new folder under .localcloud/)",
    )
    run.add_argument(
        "--no-report",
        action="store_true",
        help="do not write the health report (STATE_DIR/report/index.html)",
    )
    report = commands.add_parser(
        "report",
        help="run the pipeline on the local cloud and write its health report",
        description=(
            "Start the local cloud, run the ingestion --runs times, then write DIR/index.html: "
            "the CloudWatch dashboard's charts, the alarm states and the runs, read back from "
            "the emulated AWS APIs. The emulated AWS lives only as long as the command, so the "
            "report is written before it stops (`run` also writes one in its state dir)."
        ),
    )
    report.add_argument("--out", type=Path, required=True, help="folder of index.html")
    report.add_argument("--runs", type=int, default=1, help="scheduled runs before reporting (1)")
    report.add_argument("--api-url", help="read this MooVitamix API instead of the built-in one")
    report.add_argument(
        "--records", type=int, default=1000, help="rows per resource in the built-in API (1000)"
    )
    report.add_argument("--seed", type=int, default=0, help="seed of the built-in API's data (0)")
    report.add_argument("--shards", type=int, default=2, help="Kinesis shards of the stream (2)")
    report.add_argument(
        "--state-dir",
        type=Path,
        help="where logs of the runs are kept (default: a new folder under .localcloud/)",
    )
    run.add_argument(
        "--chaos",
        metavar="SPEC",
        help="inject faults: `all` or a comma list of NAME or NAME=probability, NAME in "
        f"{', '.join(FAULTS)}; api-*, poison and the content faults only with the built-in "
        "API; `all` leaves the content faults out (see python -m localcloud.fakeapi --help)",
    )
    redrive = commands.add_parser(
        "redrive",
        help="re-publish quarantined records and failed batches (against AWS_ENDPOINT_URL/AWS)",
        description=(
            "Re-validate quarantined records and re-publish those that pass; read the batches "
            "described in the load trigger's on-failure queue back from the stream and "
            "re-publish them. Works against the AWS endpoint of the environment (AWS, "
            "LocalStack, a moto server) with the names of --stage from .chalice/config.json; "
            "PIPELINE_* variables already set win. Exits 1 when something could not be redriven."
        ),
    )
    redrive.add_argument("--stage", default="local", help="stage whose names to use (local)")
    redrive.add_argument("--run-id", help="only records of this run (quarantine only)")
    redrive.add_argument("--entity", help="only records of this entity (quarantine only)")
    redrive.add_argument(
        "--source",
        choices=("all", "quarantine", "failures"),
        default="all",
        help="what to redrive (all)",
    )
    redrive.add_argument(
        "--dry-run", action="store_true", help="count what would be redriven; change nothing"
    )
    redrive.add_argument("--json", action="store_true", help="print only a JSON report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return command_run(args)
    if args.command == "report":
        return command_report(args)
    if args.command == "redrive":
        return command_redrive(args)
    return 2  # pragma: no cover - argparse enforces the command


def command_run(args: argparse.Namespace) -> int:
    if args.records < 0 or args.workers < 1:
        print("--records must be >= 0 and --workers >= 1", file=sys.stderr)
        return 2
    chaos = None
    if args.chaos:
        try:
            chaos = Chaos.from_spec(args.chaos, seed=args.seed, fake_api=args.api_url is None)
        except ChaosSpecError as error:
            print(f"--chaos: {error}", file=sys.stderr)
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
        chaos=chaos,
        workers=args.workers,
    )
    with cloud:
        if args.json:
            report = cloud.run()
        else:
            console.print(
                f"[bold]local cloud up[/] in {cloud.started_s:.1f} s: moto at {cloud.moto.url}, "
                f"API at {cloud.settings.api_url}"
                + (f", PostgreSQL database {cloud.postgres_database}" if cloud.postgres else "")
            )
            report = _run_with_progress(cloud, console)
        if args.dump:
            cloud.dump(args.dump)
        health = None if args.no_report else write_report(cloud, state_dir / "report")
    if args.json:
        summary = report.as_dict()
        if health is not None:
            summary["report"] = str(health)
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_report(console, report, cloud)
        if args.dump:
            console.print(f"stored rows dumped to {args.dump}/")
        alarming = [name for name, state in report.alarms.items() if state == "ALARM"]
        if alarming:
            console.print(f"[red]alarms in ALARM: {', '.join(alarming)}[/]")
        if health is not None:
            console.print(f"health report: {health}")
    return 0 if report.status == "succeeded" else 1


def command_report(args: argparse.Namespace) -> int:
    if args.records < 0 or args.runs < 1:
        print("--records must be >= 0 and --runs >= 1", file=sys.stderr)
        return 2
    Path(".localcloud").mkdir(exist_ok=True)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="report-", dir=".localcloud"))
    console = Console(stderr=True)
    cloud = LocalCloud(
        state_dir,
        api_url=args.api_url,
        records=args.records,
        seed=args.seed,
        shard_count=args.shards,
    )
    with cloud:
        for number in range(1, args.runs + 1):
            report = cloud.run()
            console.print(f"run {number}/{args.runs} {report.run_id}: {report.status}")
        health = write_report(cloud, args.out)
    print(f"health report: {health}")
    return 0


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
    # one column per step, the sinks side by side in it: fits an 80-column terminal
    table = Table(
        title=f"run {report.run_id}",
        caption=f"written and stored per sink: {' / '.join(sinks)}" if len(sinks) > 1 else None,
        box=box.SIMPLE_HEAD,  # no vertical rules: six columns of 1000s fit 80 characters
        pad_edge=False,
    )
    table.add_column("resource", no_wrap=True)
    for column in ("fetched", "published", "quarantined", "written", "stored"):
        table.add_column(column, justify="right", no_wrap=True)
    for entity, counts in report.entities.items():
        table.add_row(
            entity,
            str(counts["fetched"]),
            str(counts["published"]),
            str(counts["quarantined"]),
            " / ".join(str(counts["written"].get(sink, 0)) for sink in sinks),
            " / ".join(str(counts["stored"].get(sink, 0)) for sink in sinks),
        )
    console.print(table)
    unchanged = {name: c.get("unchanged", 0) for name, c in report.entities.items()}
    if any(unchanged.values()):  # a line, not a column: the table fits 80 columns
        listed = ", ".join(f"{name} {count}" for name, count in unchanged.items())
        console.print(f"not published, every sink already stores them (unchanged): {listed}")
    fanned = {name: c.get("work_items", 0) for name, c in report.entities.items()}
    if any(fanned.values()):
        listed = ", ".join(f"{name} {count}" for name, count in fanned.items() if count)
        console.print(f"fanned out to ingest_worker (work items): {listed}")
    if report.chaos is not None:
        injected = ", ".join(f"{name} x{times}" for name, times in report.chaos.items())
        console.print(f"chaos injected: {injected}")
    colour = "green" if report.status == "succeeded" else "red"
    console.print(
        f"[{colour} bold]{report.status}[/] in {report.timings['pipeline_s']:.1f} s "
        f"(total {report.timings['total_s']:.1f} s); Lambda logs: {cloud.log_path}"
    )
    if report.event is not None:
        console.print(
            f"EventBridge event [bold]{report.event.get('detail-type')}[/] "
            f"({report.event.get('source')}, id {report.event.get('id')}) received by a "
            "subscriber, with the run's counts"
        )
    for error in report.errors:
        console.print(f"[red]- {error}[/]")


def command_redrive(args: argparse.Namespace) -> int:
    """`python -m localcloud redrive`: the redrive code of `chalicelib`, run by an operator."""
    import os

    from chalicelib import wiring
    from chalicelib.redrive import RedriveReport, new_redrive_id
    from localcloud.stack import stage_environment

    for name, value in stage_environment(args.stage).items():
        os.environ.setdefault(name, value)
    wiring.reset()
    from chalicelib.settings import get_settings

    settings = get_settings()
    report = RedriveReport(new_redrive_id(), dry_run=args.dry_run)
    redriver = wiring.redriver(settings)
    if args.source in ("all", "quarantine"):
        redriver.redrive_quarantine(report, run_id=args.run_id, entity=args.entity)
    if args.source in ("all", "failures"):
        redriver.redrive_failures(report)
    summary = report.as_dict()
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        console = Console()
        console.print(f"[bold]{report.redrive_id}[/]{' (dry run)' if args.dry_run else ''}")
        for entity, counts in summary["quarantine"].items():
            console.print(f"quarantine {entity}: {counts}")
        console.print(f"on-failure queue: {summary['failures'] or 'empty'}")
        for line in summary["still_invalid"]:
            console.print(f"[yellow]still invalid[/] {line}")
        if report.runs:
            console.print(f"runs to reconcile again: {', '.join(sorted(report.runs))}")
    return 0 if not report.still_invalid and not report.failures.get("expired") else 1
