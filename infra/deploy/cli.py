"""The command line of `python -m infra.deploy`: its subcommands, options and exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infra.deploy.commands import deploy, destroy, package
from infra.deploy.invocation import invoke, invoke_failure, scheduled_event_payload
from infra.deploy.status import describe_deployment, status_check
from infra.deploy.target import SCHEDULED_FUNCTION, DeployError, check_target, endpoint_label
from infra.stages import FUNCTIONS, PROJECT_ROOT, Stage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.deploy",
        description="Deploy, remove, package or inspect one stage of the pipeline.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--stage", required=True, help="stage of .chalice/config.json")
        sub.add_argument(
            "--project-dir", type=Path, default=PROJECT_ROOT, help="the Chalice project"
        )
        return sub

    command(
        "deploy", "apply the infrastructure, chalice deploy, set the trigger's failure settings"
    )
    destroy_parser = command("destroy", "chalice delete, then remove the infrastructure")
    destroy_parser.add_argument(
        "--yes", action="store_true", help="do not ask (the stage's data is deleted)"
    )
    package_parser = command("package", "write CloudFormation (SAM) and Terraform packages")
    package_parser.add_argument("--out", type=Path, default=Path("out"), help="output folder")
    status_parser = command("status", "print the deployed functions, schedule and trigger")
    status_parser.add_argument(
        "--check",
        action="store_true",
        help="instead, compare the deployed Kinesis and SQS triggers with the configuration "
        "and exit 1 naming each difference",
    )
    invoke_parser = command("invoke", "invoke a deployed function and print its answer")
    invoke_parser.add_argument("function", choices=FUNCTIONS)
    invoke_parser.add_argument(
        "--payload", help="JSON event (default: a scheduled event for ingest, none for load)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stage = Stage.load(args.stage, args.project_dir.resolve())
        if args.command == "deploy":
            deploy(stage)
        elif args.command == "destroy":
            if not args.yes and not _confirmed(stage):
                print("nothing removed", file=sys.stderr)
                return 1
            destroy(stage)
        elif args.command == "package":
            package(stage, args.out)
        elif args.command == "status" and args.check:
            check_target(stage)
            return status_check(stage)
        elif args.command == "status":
            check_target(stage)
            deployment = describe_deployment(stage)
            print(json.dumps(deployment, indent=2, default=str))
        elif args.command == "invoke":
            if args.payload:
                payload = json.loads(args.payload)
            elif args.function == SCHEDULED_FUNCTION:
                payload = scheduled_event_payload(stage)
            else:
                payload = {"Records": []}
            answer = invoke(stage, args.function, payload)
            print(json.dumps(answer, indent=2))
            failure = invoke_failure(args.function, answer)
            if failure:
                print(f"error: {failure}", file=sys.stderr)
                return 1
    except (DeployError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _confirmed(stage: Stage) -> bool:
    if not sys.stdin.isatty():
        print(f"refusing to remove stage {stage.name} without --yes", file=sys.stderr)
        return False
    answer = input(f"remove stage {stage.name} and all its data from {endpoint_label()}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")
