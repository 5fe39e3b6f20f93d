"""The command line of `python -m localcloud`: its subcommands, their options and help."""

from __future__ import annotations

import argparse
from pathlib import Path

from localcloud.chaos import FAULTS


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
