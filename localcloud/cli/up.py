"""`up` and `down`: a local cloud kept running, its endpoints printed, and its stop."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

import orjson
from psycopg.conninfo import make_conninfo
from rich.console import Console

from localcloud.cli.cloud import cloud_for
from localcloud.monitoring.health_report import write_report
from localcloud.session import (
    HOME,
    ReportServer,
    SessionError,
    alive,
    read_state,
    state_path,
    stop_cloud,
    write_state,
)
from localcloud.stack import MOTO_CREDENTIAL, REGION, LocalCloud


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
    cloud = cloud_for(args, state_dir)
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
