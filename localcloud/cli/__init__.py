"""`python -m localcloud`: run the pipeline on the embedded local cloud, no Docker needed.

The command line is `arguments.py`; each subcommand is a module (`run.py`: `run` and
`run --attach`, `up.py`: `up` and `down`, `report.py`, `redrive.py`); `cloud.py` builds the
cloud a command starts and `display.py` draws what `run` shows on the terminal.
"""

from __future__ import annotations

import argparse
import os
import sys

from localcloud.cli.arguments import build_parser
from localcloud.cli.cloud import CLOUD_SETTINGS, shell_settings
from localcloud.cli.redrive import command_redrive
from localcloud.cli.report import command_report
from localcloud.cli.run import command_attach, command_run
from localcloud.cli.up import command_down, command_up
from localcloud.deployment import DeploymentError
from localcloud.session import SessionError, signals_as_interrupt

__all__ = ["CLOUD_SETTINGS", "main", "shell_settings"]


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
