"""`python -m localcloud`: run the pipeline on the embedded local cloud, no Docker needed."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson
from psycopg.conninfo import make_conninfo
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from localcloud.chaos import FAULTS, Chaos, ChaosSpecError
from localcloud.deployment import DeploymentError
from localcloud.monitoring.health_report import write_report
from localcloud.run_report import RunReport
from localcloud.session import (
    HOME,
    ReportServer,
    SessionError,
    alive,
    attach_lock,
    read_state,
    signals_as_interrupt,
    state_path,
    stop_cloud,
    write_state,
)
from localcloud.stack import MOTO_CREDENTIAL, REGION, LocalCloud


def _add_cloud_options(parser: argparse.ArgumentParser) -> None:
    """What the cloud serves and how wide its stream is: the same for `up` and `report`."""
    parser.add_argument("--api-url", help="read this MooVitamix API instead of the built-in one")
    parser.add_argument(
        "--records", type=int, default=1000, help="rows per resource in the built-in API (1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the built-in API's data (0)")
    parser.add_argument("--shards", type=int, default=2, help="Kinesis shards of the stream (2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud",
        description=(
            "The embedded local cloud: a moto server for AWS, a MooVitamix-compatible fake API, "
            "the local stage deployed into it by the deploy code, and drivers that fire the "
            "schedules and run the deployed mappings the way AWS does."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="start the local cloud, run one scheduled ingestion, report and stop",
        description=(
            "Start the local cloud and deploy the local stage, fire the ingestion schedule once, "
            "drive the deployed Kinesis and SQS mappings until everything is drained (each "
            "function runs in warm worker processes of its own, one per concurrent execution, "
            "as Lambda runs it), run the reconcile function when the pipeline asks for the "
            "run's verdict (once the run is loaded; the reconcile schedule fires as the backstop "
            "if it has not settled the run), then read the verdict and the counts back. Exits 0 "
            "only when the reconcile function found every fetched record stored or quarantined. "
            "--json adds timings.verdict_s (schedule fired -> verdict written), "
            "timings.reconcile_s and aws_calls per function. "
            "PIPELINE_* variables of the shell are deployed as the functions' environment."
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
    run.add_argument(
        "--attach",
        action="store_true",
        help="run on the cloud `python -m localcloud up` keeps running (found through "
        ".localcloud/up.json) instead of a new one; its data, API and report are used, "
        "--api-url/--records/--seed/--shards/--state-dir are ignored",
    )
    up = commands.add_parser(
        "up",
        help="start the local cloud, deploy the stage and keep it up until Ctrl-C or `down`",
        description=(
            "Start moto, PostgreSQL and the built-in API, deploy the local stage through the "
            "deploy code, print the endpoints (AWS endpoint with dummy credentials, the "
            "PostgreSQL connection string for psql, the API URL, the health report URL) and "
            "stay up until Ctrl-C, SIGTERM or `python -m localcloud down`. Run the schedule "
            "on it with `python -m localcloud run --attach`. PIPELINE_* variables of the shell "
            "are deployed as the functions' environment."
        ),
    )
    _add_cloud_options(up)
    up.add_argument(
        "--json",
        action="store_true",
        help="print the endpoints as one JSON object on one line on stdout once ready",
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        help="logs, the deployed project and the report of the cloud (.localcloud/up)",
    )
    commands.add_parser(
        "down",
        help="stop the cloud `up` started (and whatever a crashed `up` left running)",
        description="Stop the local cloud started by `python -m localcloud up` and every "
        "process it started; exits 1 when none is up.",
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
    _add_cloud_options(report)
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
    try:
        with signals_as_interrupt():
            return _dispatch(args)
    except KeyboardInterrupt as interrupt:
        print("interrupted: every process this command started is stopped", file=sys.stderr)
        # The drivers' threads (pollers, producer) may still be mid-call: end the process now,
        # rather than let them go on against a stopped (or, attached, a live) cloud.
        code = {"SIGTERM": 143, "SIGHUP": 129}.get(str(interrupt), 130)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except (SessionError, DeploymentError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return command_run(args) if not args.attach else command_attach(args)
    if args.command == "up":
        return command_up(args)
    if args.command == "down":
        return command_down(args)
    if args.command == "report":
        return command_report(args)
    if args.command == "redrive":
        return command_redrive(args)
    return 2  # pragma: no cover - argparse enforces the command


CLOUD_SETTINGS = frozenset(
    {
        "PIPELINE_API_URL",  # --api-url, or the built-in API's own address
        "PIPELINE_STREAM_SHARDS",  # --shards
        "PIPELINE_POSTGRES_SECRET_ARN",  # the cloud's own PostgreSQL
        "PIPELINE_POSTGRES_DSN",
    }
)
"""Settings the local cloud decides itself, from its options and the services it starts."""


def shell_settings() -> dict[str, str]:
    """The `PIPELINE_*` variables of the shell: the local stage is deployed with them, as if
    they were in its section of `.chalice/config.json` (the functions never read the shell's),
    except `CLOUD_SETTINGS`."""
    return {
        name: value
        for name, value in os.environ.items()
        if name.startswith("PIPELINE_") and name not in CLOUD_SETTINGS
    }


def _cloud(args: argparse.Namespace, state_dir: Path, **options: Any) -> LocalCloud:
    """A local cloud of the command's options (`_add_cloud_options`, plus `run`'s own)."""
    return LocalCloud(
        state_dir,
        api_url=args.api_url,
        records=args.records,
        seed=args.seed,
        shard_count=args.shards,
        extra_env=shell_settings(),
        function_processes=True,
        **options,
    )


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
    cloud = _cloud(args, state_dir, chaos=chaos, workers=args.workers)
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
    return _finish(args, console, report, cloud, health)


def _finish(
    args: argparse.Namespace,
    console: Console,
    report: RunReport,
    cloud: LocalCloud,
    health: Path | None,
    url: str | None = None,
) -> int:
    """Print the run's summary (JSON or table); the exit status."""
    if args.json:
        summary = report.as_dict()
        if health is not None:
            summary["report"] = str(health)
        if url is not None:
            summary["report_url"] = url
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_report(console, report, cloud)
        if args.dump:
            console.print(f"stored rows dumped to {args.dump}/")
        alarming = [name for name, state in report.alarms.items() if state == "ALARM"]
        if alarming:
            console.print(f"[red]alarms in ALARM: {', '.join(alarming)}[/]")
        if health is not None:
            console.print(f"health report: {url or health}")
    return 0 if report.status == "succeeded" else 1


def _chaos(args: argparse.Namespace, *, fake_api: bool) -> Chaos | None:
    if not args.chaos:
        return None
    return Chaos.from_spec(args.chaos, seed=args.seed, fake_api=fake_api)


def command_up(args: argparse.Namespace) -> int:
    """`localcloud up`: start, deploy, print the endpoints, wait for a stop."""
    if args.records < 0:
        print("--records must be >= 0", file=sys.stderr)
        return 2
    existing = read_state()
    if existing is not None and alive(int(existing["pid"])):
        raise SessionError(
            f"a local cloud is already up (pid {existing['pid']}): `python -m localcloud down`"
        )
    if existing is not None:  # an `up` that was killed: stop what it left before forgetting it
        for line in stop_cloud():
            print(line, file=sys.stderr)
    HOME.mkdir(exist_ok=True)
    state_dir = (args.state_dir or HOME / "up").resolve()
    console = Console(stderr=True)
    cloud = _cloud(args, state_dir)
    stopped = threading.Event()
    with cloud:
        report_dir = state_dir / "report"
        write_report(cloud, report_dir)
        with ReportServer(report_dir) as server:
            assert cloud.provisioned is not None
            assert cloud.stage is not None
            endpoints = _endpoints(cloud, server.url)
            write_state(
                {
                    **endpoints,
                    "pid": os.getpid(),
                    "state_dir": str(state_dir),
                    "project": str(cloud.stage.project_dir),
                    "started_at": cloud.monitoring.started_at.isoformat(),
                    "attributes": cloud.provisioned.attributes,
                    "processes": cloud.processes(),
                    "positions": {},
                }
            )
            try:
                if args.json:
                    sys.stdout.write(orjson.dumps(endpoints).decode() + "\n")
                    sys.stdout.flush()
                else:
                    _print_endpoints(console, endpoints, cloud)
                stopped.wait()  # until a signal interrupts it
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM, `down`: the way to stop it
                console.print("stopping the local cloud")
            finally:
                state_path().unlink(missing_ok=True)
    console.print("local cloud stopped: every process it started is stopped")
    return 0


def _endpoints(cloud: LocalCloud, report_url: str) -> dict[str, Any]:
    credentials = cloud.postgres_credentials
    dsn = (
        make_conninfo(
            host=credentials.host,
            port=credentials.port,
            user=credentials.username,
            password=credentials.password,
            dbname=credentials.dbname,
        )
        if credentials is not None
        else None
    )
    return {
        "aws_endpoint": cloud.moto.url,
        "aws_region": REGION,
        "aws_access_key_id": MOTO_CREDENTIAL,
        "aws_secret_access_key": MOTO_CREDENTIAL,
        "postgres_dsn": dsn,
        "api_url": str(cloud.settings.api_url),
        "report_url": report_url,
        "stage": "local",
        "table_prefix": cloud.settings.table_prefix,
    }


def _print_endpoints(console: Console, endpoints: dict[str, Any], cloud: LocalCloud) -> None:
    console.soft_wrap = True  # lines to copy and paste (the DSN) must not be broken
    console.print(f"[bold green]local cloud up[/] in {cloud.started_s:.1f} s (stage local)")
    console.print(
        f"  AWS        {endpoints['aws_endpoint']}  (region {endpoints['aws_region']}, "
        f"AWS_ACCESS_KEY_ID={MOTO_CREDENTIAL} AWS_SECRET_ACCESS_KEY={MOTO_CREDENTIAL})"
    )
    if endpoints["postgres_dsn"]:
        console.print(f'  PostgreSQL psql "{endpoints["postgres_dsn"]}"')
    console.print(f"  API        {endpoints['api_url']}")
    console.print(f"  report     {endpoints['report_url']}")
    console.print(
        "run the schedule: python -m localcloud run --attach; stop: Ctrl-C or "
        "python -m localcloud down"
    )


def command_down(args: argparse.Namespace) -> int:
    for line in stop_cloud():
        print(line, file=sys.stderr)
    print("local cloud down", file=sys.stderr)
    return 0


def command_attach(args: argparse.Namespace) -> int:
    """`run --attach`: fire the schedule on the running cloud and report like `run`."""
    state = read_state()
    if state is None or not alive(int(state["pid"])):
        raise SessionError("no local cloud is up: start one with `python -m localcloud up`")
    try:
        chaos = _chaos(args, fake_api=False)
    except ChaosSpecError as error:
        print(
            f"--chaos: {error} (attached runs read the cloud's API: no api-* faults)",
            file=sys.stderr,
        )
        return 2
    console = Console(stderr=args.json)
    with attach_lock():
        cloud = LocalCloud.attach(state, chaos=chaos, workers=args.workers, function_processes=True)
        with cloud:
            report = cloud.run() if args.json else _run_with_progress(cloud, console)
            if args.dump:
                cloud.dump(args.dump)
            health = (
                None if args.no_report else write_report(cloud, Path(state["state_dir"]) / "report")
            )
        latest = read_state() or state
        latest["positions"] = cloud.positions
        write_state(latest)
    return _finish(args, console, report, cloud, health, url=state.get("report_url"))


def command_report(args: argparse.Namespace) -> int:
    if args.records < 0 or args.runs < 1:
        print("--records must be >= 0 and --runs >= 1", file=sys.stderr)
        return 2
    Path(".localcloud").mkdir(exist_ok=True)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="report-", dir=".localcloud"))
    console = Console(stderr=True)
    cloud = _cloud(args, state_dir)
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
    verdict = report.timings.get("verdict_s")
    console.print(
        f"[{colour} bold]{report.status}[/] in {report.timings['pipeline_s']:.1f} s"
        + (
            f", verdict at {verdict:.1f} s ({report.verdict_trigger or 'schedule'})"
            if verdict is not None
            else ""
        )
        + f" (total {report.timings['total_s']:.1f} s); Lambda logs: {cloud.log_path}"
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
    from chalicelib.deadletter.redrive import RedriveReport, new_redrive_id
    from infra.chalice_config import stage_environment

    added = [name for name in stage_environment(args.stage) if name not in os.environ]
    for name, value in stage_environment(args.stage).items():
        os.environ.setdefault(name, value)
    wiring.reset()
    from chalicelib.settings import get_settings

    try:
        settings = get_settings()
        report = RedriveReport(new_redrive_id(), dry_run=args.dry_run)
        redriver = wiring.redriver(settings)
        if args.source in ("all", "quarantine"):
            redriver.redrive_quarantine(report, run_id=args.run_id, entity=args.entity)
        if args.source in ("all", "failures"):
            redriver.redrive_failures(report)
    finally:  # the stage's names served this command only (it may run inside another program)
        for name in added:
            os.environ.pop(name, None)
        wiring.reset()
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
