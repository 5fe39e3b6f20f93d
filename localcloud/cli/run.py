"""`run` and `run --attach`: one scheduled run on a new local cloud, or on the one `up` keeps."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson
from rich.console import Console

from localcloud.chaos import Chaos, ChaosSpecError
from localcloud.cli.cloud import cloud_for
from localcloud.cli.display import print_report, run_with_progress
from localcloud.monitoring.health_report import write_report
from localcloud.run_report import RunReport
from localcloud.session import (
    SessionError,
    alive,
    attach_lock,
    read_state,
    write_state,
)
from localcloud.stack import LocalCloud


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
    cloud = cloud_for(args, state_dir, chaos=chaos, workers=args.workers)
    with cloud:
        if args.json:
            report = cloud.run()
        else:
            console.print(
                f"[bold]local cloud up[/] in {cloud.started_s:.1f} s: moto at {cloud.moto.url}, "
                f"API at {cloud.settings.api_url}"
                + (f", PostgreSQL database {cloud.postgres_database}" if cloud.postgres else "")
            )
            report = run_with_progress(cloud, console)
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
        print_report(console, report, cloud)
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
            report = cloud.run() if args.json else run_with_progress(cloud, console)
            if args.dump:
                cloud.dump(args.dump)
            health = (
                None if args.no_report else write_report(cloud, Path(state["state_dir"]) / "report")
            )
        latest = read_state() or state
        latest["positions"] = cloud.positions
        write_state(latest)
    return _finish(args, console, report, cloud, health, url=state.get("report_url"))
