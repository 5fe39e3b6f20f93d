"""`report`: runs on a new local cloud, then its health report written to a folder."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from localcloud.cli.cloud import cloud_for
from localcloud.monitoring.health_report import write_report


def command_report(args: argparse.Namespace) -> int:
    if args.records < 0 or args.runs < 1:
        print("--records must be >= 0 and --runs >= 1", file=sys.stderr)
        return 2
    Path(".localcloud").mkdir(exist_ok=True)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="report-", dir=".localcloud"))
    console = Console(stderr=True)
    cloud = cloud_for(args, state_dir)
    with cloud:
        for number in range(1, args.runs + 1):
            report = cloud.run()
            console.print(f"run {number}/{args.runs} {report.run_id}: {report.status}")
        health = write_report(cloud, args.out)
    print(f"health report: {health}")
    return 0
