"""`redrive`: the redrive code of `chalicelib`, run by an operator against an AWS endpoint."""

from __future__ import annotations

import argparse
import sys

import orjson
from rich.console import Console


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
