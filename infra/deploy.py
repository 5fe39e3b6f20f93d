"""Deploy, remove and package the whole pipeline: infrastructure, Chalice app, trigger settings.

    python -m infra.deploy deploy  --stage dev         # AWS account of the environment
    AWS_ENDPOINT_URL=http://localhost:4566 python -m infra.deploy deploy --stage localstack
    python -m infra.deploy destroy --stage dev [--yes]
    python -m infra.deploy package --stage dev [--out out]
    python -m infra.deploy status  --stage localstack [--check]
    python -m infra.deploy invoke  --stage localstack ingest

`deploy` applies `infra.provision` (create-or-update), runs `chalice deploy` with the stage's
PIPELINE_* variables (the decorators in app.py read the schedule, stream and batch settings
when Chalice loads the app), applies the trigger's failure settings Chalice cannot set, and
prints what exists. Every step compares before it writes: deploying twice changes nothing.
`status --check` reads the deployed triggers back and exits 1 when any setting differs from the
configuration (`infra.deploy_check`); `make deploy` ends with it, because a bare `chalice
deploy` recreates the Kinesis mapping without its failure settings and nothing else notices.
The endpoint is the standard AWS_ENDPOINT_URL; stages meant for an emulator refuse to run
without one, so they never reach a real account by mistake.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess  # runs the chalice CLI with fixed arguments  # nosec B404
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from infra import policies, preflight
from infra.chalice_cli import APP_ONLY
from infra.cloudformation import add_to_terraform, infra_template, sam_merge_template
from infra.deploy_check import check_deployment
from infra.deploy_check import stream_arn as deployed_stream_arn
from infra.monitoring import apply_monitoring, remove_monitoring
from infra.network import endpoints_of_stage
from infra.provision import FAILURE_QUEUE, STREAM, StackResult, apply_stack, destroy_stack
from infra.resources import Change
from infra.spec import StackSpec
from infra.stages import EMULATOR_STAGES, FUNCTIONS, PROJECT_ROOT, Stage
from infra.trigger import LOAD_FUNCTION, apply_failure_settings, mappings_of

SCHEDULED_FUNCTION = "ingest"
WORKER_FUNCTION = "ingest_worker"
"""The function Chalice subscribes to the work queue (`@app.on_sqs_message`)."""
CHALICE_DEFAULT_TIMEOUT_S = 60


class DeployError(RuntimeError):
    """A step failed; the message says which and what to do."""


@dataclass
class Report:
    """What one command did, for printing and for tests."""

    stage: str
    endpoint: str
    infra: list[Change] = field(default_factory=list)
    trigger: Change | None = None
    deployment: dict[str, Any] = field(default_factory=dict)
    removed: list[Change] = field(default_factory=list)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    """The infrastructure's attributes (ARNs, queue URLs) by logical id, after `deploy`."""

    @property
    def changed(self) -> list[Change]:
        changes = [*self.infra, *([self.trigger] if self.trigger else []), *self.removed]
        return [
            change for change in changes if change.action not in ("unchanged", "absent", "retained")
        ]


def endpoint_label() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or "AWS (default endpoints)"


def check_target(stage: Stage) -> None:
    if stage.name in EMULATOR_STAGES and not os.environ.get("AWS_ENDPOINT_URL"):
        raise DeployError(
            f"stage {stage.name} is for an emulator: set AWS_ENDPOINT_URL "
            "(LocalStack: http://localhost:4566), or use `make deploy-local`"
        )


def check_account(stage: Stage) -> None:
    """Refuse to deploy a stage into another account or region than its policies name.

    The policy files name the region and account of the stage's `infra` section: deployed
    elsewhere, every grant would name resources that are not there. Emulator stages are not
    checked (their ARNs name the emulator's default account, and emulators enforce no IAM).
    """
    if stage.emulator:
        return
    sts = aws.client("sts")
    account = str(sts.get_caller_identity()["Account"])
    region = str(sts.meta.region_name)
    if (account, region) != (stage.account_id, stage.region):
        raise DeployError(
            f"stage {stage.name} is pinned to account {stage.account_id} in {stage.region} "
            f"(its IAM policies name them), but these credentials deploy to account {account} "
            f"in {region}: set the stage's infra.account_id and infra.region in "
            ".chalice/config.json, run `python -m infra.policies`, review the diff, deploy again"
        )


def spec_for(stage: Stage) -> StackSpec:
    return StackSpec(
        stage.settings,
        stage=stage.name,
        app_name=stage.app_name,
        worker_timeout_s=int(
            stage.function_setting(WORKER_FUNCTION, "lambda_timeout", CHALICE_DEFAULT_TIMEOUT_S)
        ),
        production=stage.production,
        tls_only=not stage.emulator,
        vpc_endpoints=endpoints_of_stage(
            stage.section, stage.function_setting(LOAD_FUNCTION, "subnet_ids", []) or []
        ),
    )


def check_preflight(stage: Stage, refuse: bool = True) -> None:
    """TLS to RDS and the VPC (`infra.preflight`); emulator stages are exempt.

    `deploy` refuses a stage with a problem; `package` (refuse=False) warns, since its
    templates are also written to be read before the stage is ready.
    """
    if stage.name in EMULATOR_STAGES:
        return
    if refuse:
        preflight.check(stage)
        return
    for problem in preflight.problems(stage):
        print(f"WARNING: stage {stage.name} is not ready for AWS: {problem}", file=sys.stderr)


def chalice_environment(stage: Stage) -> dict[str, str]:
    """This process's environment with the stage's PIPELINE_* variables, and only those."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    environment.update({k: v for k, v in stage.environment.items() if k.startswith("PIPELINE_")})
    return environment


def run_chalice(
    stage: Stage, *arguments: str, app_only: bool = False, output: IO[str] | None = None
) -> None:
    """`chalice --project-dir DIR ARGUMENTS...` with the stage's settings; output streamed
    (to `output` when given). `app_only`: the package holds the app's code without its
    dependencies (the local cloud)."""
    command = [
        sys.executable,
        "-m",
        "infra.chalice_cli",
        "--project-dir",
        str(stage.project_dir),
        *arguments,
    ]
    print(f"$ chalice {' '.join(arguments)}", flush=True)
    environment = chalice_environment(stage)
    if app_only:
        environment[APP_ONLY] = "1"
    completed = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments  # nosec B603
        command,
        env=environment,
        cwd=PROJECT_ROOT,
        check=False,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )
    if completed.returncode != 0:
        raise DeployError(f"`chalice {' '.join(arguments)}` failed (exit {completed.returncode})")


def check_policies(stage: Stage) -> None:
    problems = policies.stale_files(stage.project_dir)
    if problems:
        raise DeployError(
            "IAM policy files are stale:\n  "
            + "\n  ".join(problems)
            + "\nrun `python -m infra.policies` and review the diff"
        )


# --------------------------------------------------------------------------------------------
# deploy
# --------------------------------------------------------------------------------------------


def deploy(stage: Stage, *, app_only: bool = False, output: IO[str] | None = None) -> Report:
    """Everything of `make deploy`; `app_only` skips building the dependencies into the
    deployment package (the local cloud runs the functions from the work tree); Chalice's
    output goes to `output` when given."""
    check_target(stage)
    check_policies(stage)
    check_preflight(stage)
    check_account(stage)
    spec = spec_for(stage)
    report = Report(stage.name, endpoint_label())
    print(f"deploying stage {stage.name} to {report.endpoint}", flush=True)
    infra: StackResult = apply_stack(spec)
    report.infra = infra.changes
    report.attributes = infra.attributes
    _print_changes("infrastructure", infra.changes)
    run_chalice(stage, "deploy", "--stage", stage.name, app_only=app_only, output=output)
    report.trigger = apply_failure_settings(
        aws.client("lambda"),
        spec,
        stream_arn=infra.attributes[STREAM]["Arn"],
        queue_arn=infra.attributes[FAILURE_QUEUE]["Arn"],
    )
    _print_changes("trigger", [report.trigger])
    monitoring = apply_monitoring(stage.settings, stage.name)
    print(
        f"monitoring: {len(monitoring.alarms)} alarms -> {monitoring.topic_arn}, "
        f"dashboard {monitoring.dashboard}",
        flush=True,
    )
    report.deployment = describe_deployment(stage)
    _print_deployment(report.deployment)
    return report


def describe_deployment(stage: Stage) -> dict[str, Any]:
    """The deployed functions, the schedule rule and its target, and the Kinesis mapping."""
    spec = spec_for(stage)
    lambda_client = aws.client("lambda")
    functions: dict[str, Any] = {}
    for function in FUNCTIONS:
        name = spec.function_name(function)
        try:
            configuration = lambda_client.get_function(FunctionName=name)["Configuration"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            continue
        concurrency = lambda_client.get_function_concurrency(FunctionName=name)
        functions[function] = {
            "name": name,
            "arn": configuration["FunctionArn"],
            "role": configuration["Role"],
            "runtime": configuration.get("Runtime"),
            "memory_mb": configuration.get("MemorySize"),
            "timeout_s": configuration.get("Timeout"),
            "reserved_concurrency": concurrency.get("ReservedConcurrentExecutions"),
            "code_sha256": configuration.get("CodeSha256"),
            "vpc_subnets": configuration.get("VpcConfig", {}).get("SubnetIds", []),
        }
    events = aws.client("events")
    rule_name = stage.rule_name(SCHEDULED_FUNCTION)
    schedule: dict[str, Any] = {}
    try:
        rule = events.describe_rule(Name=rule_name)
        targets = events.list_targets_by_rule(Rule=rule_name)["Targets"]
        schedule = {
            "rule": rule_name,
            "expression": rule.get("ScheduleExpression"),
            "state": rule.get("State"),
            "targets": [target["Arn"] for target in targets],
        }
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    stream_arn = deployed_stream_arn(spec)
    mappings = (
        mappings_of(lambda_client, spec.function_name(LOAD_FUNCTION), stream_arn)
        if LOAD_FUNCTION in functions and stream_arn
        else []
    )
    trigger = [
        {
            key: mapping.get(key)
            for key in (
                "UUID",
                "State",
                "EventSourceArn",
                "BatchSize",
                "MaximumBatchingWindowInSeconds",
                "StartingPosition",
                "FunctionResponseTypes",
                "BisectBatchOnFunctionError",
                "MaximumRetryAttempts",
                "MaximumRecordAgeInSeconds",
                "DestinationConfig",
                "ParallelizationFactor",
            )
        }
        for mapping in mappings
    ]
    work_trigger = [
        {
            key: mapping.get(key)
            for key in ("UUID", "State", "EventSourceArn", "BatchSize", "FunctionArn")
        }
        for mapping in (
            _work_queue_mappings(lambda_client, spec) if WORKER_FUNCTION in functions else []
        )
    ]
    return {
        "functions": functions,
        "schedule": schedule,
        "trigger": trigger,
        "work_trigger": work_trigger,
    }


def _work_queue_mappings(lambda_client: Any, spec: StackSpec) -> list[dict[str, Any]]:
    """The worker's mappings from the work queue (none when the queue does not exist)."""
    try:
        url = aws.client("sqs").get_queue_url(QueueName=spec.work_queue_name)["QueueUrl"]
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
        return []
    queue_arn = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    return mappings_of(lambda_client, spec.function_name(WORKER_FUNCTION), queue_arn)


# --------------------------------------------------------------------------------------------
# destroy
# --------------------------------------------------------------------------------------------


def destroy(stage: Stage) -> Report:
    """`chalice delete`, the functions' log groups, then the infrastructure, newest first."""
    check_target(stage)
    check_account(stage)
    spec = spec_for(stage)
    report = Report(stage.name, endpoint_label())
    print(f"removing stage {stage.name} from {report.endpoint}", flush=True)
    if (stage.project_dir / ".chalice" / "deployed" / f"{stage.name}.json").exists():
        run_chalice(stage, "delete", "--stage", stage.name)
    else:
        print(f"no Chalice deployment recorded for stage {stage.name}: nothing to delete")
    logs = aws.client("logs")
    for function in FUNCTIONS:
        group = spec.log_group(function)
        try:
            logs.delete_log_group(logGroupName=group)
            report.removed.append(Change(f"log group {group}", "deleted"))
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            report.removed.append(Change(f"log group {group}", "absent"))
    report.removed += remove_monitoring(stage.settings, stage.name)
    report.removed += destroy_stack(spec).changes
    _print_changes("removed", report.removed)
    return report


# --------------------------------------------------------------------------------------------
# package
# --------------------------------------------------------------------------------------------


@dataclass
class Packages:
    infra_template: Path
    merge_template: Path
    sam_template: Path
    terraform: Path


def package(stage: Stage, out: Path) -> Packages:
    """CloudFormation (SAM, infra merged) and Terraform packages of the stage under `out/STAGE`."""
    check_policies(stage)
    check_preflight(stage, refuse=False)
    spec = spec_for(stage)
    root = (out / stage.name).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    infra_file = root / "infra.json"
    merge_file = root / "merge-template.json"
    infra_file.write_text(json.dumps(infra_template(spec), indent=2) + "\n")
    merge_file.write_text(json.dumps(sam_merge_template(spec), indent=2) + "\n")
    cloudformation_dir = root / "cloudformation"
    run_chalice(
        stage,
        "package",
        "--stage",
        stage.name,
        "--merge-template",
        str(merge_file),
        str(cloudformation_dir),
    )
    terraform_dir = root / "terraform"
    run_chalice(
        stage, "package", "--pkg-format", "terraform", "--stage", stage.name, str(terraform_dir)
    )
    shutil.copyfile(infra_file, terraform_dir / infra_file.name)
    terraform_file = terraform_dir / "chalice.tf.json"
    terraform = json.loads(terraform_file.read_text())
    add_to_terraform(terraform, spec, infra_file.name)
    terraform_file.write_text(json.dumps(terraform, indent=2) + "\n")
    packages = Packages(infra_file, merge_file, cloudformation_dir / "sam.json", terraform_file)
    for label, path in vars(packages).items():
        print(f"{label:<15} {path}")
    return packages


# --------------------------------------------------------------------------------------------
# invoke
# --------------------------------------------------------------------------------------------


def invoke(stage: Stage, function: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Invoke a deployed function synchronously; returns its answer and the log tail.

    `payload` is the function's JSON answer, or None with the answer as text in `raw_payload`
    when it is not JSON (an emulator that cannot run functions answers with its own error text).
    `function_error` is Lambda's `FunctionError` (`Unhandled`, `Handled`) when the call failed.
    """
    check_target(stage)
    response = aws.client("lambda").invoke(
        FunctionName=spec_for(stage).function_name(function),
        Payload=json.dumps(payload).encode(),
        LogType="Tail",
    )
    raw = response["Payload"].read().decode(errors="replace")
    answer: dict[str, Any] = {
        "status": response.get("StatusCode"),
        "function_error": response.get("FunctionError"),
        "payload": None,
        "log_tail": base64.b64decode(response.get("LogResult", "")).decode(errors="replace"),
    }
    try:
        answer["payload"] = json.loads(raw) if raw else None
    except ValueError:
        answer["raw_payload"] = raw
    return answer


def invoke_failure(function: str, answer: dict[str, Any]) -> str | None:
    """What went wrong with an invocation, in one message; None when it succeeded."""
    raw = answer.get("raw_payload")
    error = answer.get("function_error")
    if error is None and raw is None:
        return None
    if isinstance(answer.get("payload"), dict) and "errorMessage" in answer["payload"]:
        body = answer["payload"]
        what = f"{body.get('errorType', 'Error')}: {body['errorMessage']}"
    elif raw is not None:
        what = f"the answer is not JSON: {raw[:2000]}"
    else:
        what = json.dumps(answer.get("payload"))[:2000]
    message = f"{function} failed (FunctionError: {error or 'none'}): {what}"
    if raw is not None:
        message += (
            "\nThe endpoint answered with text instead of the function's JSON: an emulator "
            "that records functions but cannot run them (a moto server without Docker) "
            "answers this way; LocalStack runs them."
        )
    return message


def scheduled_event_payload(stage: Stage) -> dict[str, Any]:
    """What the schedule rule sends, so a manual ingest run looks like a scheduled one."""
    return {
        "version": "0",
        "id": "manual-invocation",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "resources": [stage.rule_name(SCHEDULED_FUNCTION)],
        "detail": {},
    }


# --------------------------------------------------------------------------------------------
# printing and CLI
# --------------------------------------------------------------------------------------------


def _print_changes(title: str, changes: list[Change]) -> None:
    print(f"{title}:")
    for change in changes:
        print(f"  {change}")
    sys.stdout.flush()


def _print_deployment(deployment: dict[str, Any]) -> None:
    print("deployed:")
    for details in deployment["functions"].values():
        print(
            f"  function {details['name']}: {details['memory_mb']} MB, "
            f"{details['timeout_s']} s, reserved concurrency "
            f"{details['reserved_concurrency'] or 'none'}, role {details['role']}"
        )
    schedule = deployment["schedule"]
    if schedule:
        print(
            f"  schedule {schedule['rule']}: {schedule['expression']} ({schedule['state']}) "
            f"-> {', '.join(schedule['targets'])}"
        )
    for mapping in deployment["trigger"]:
        destination = (mapping.get("DestinationConfig") or {}).get("OnFailure", {})
        print(
            f"  trigger {mapping['UUID']}: {mapping['EventSourceArn']} batch "
            f"{mapping['BatchSize']} window {mapping['MaximumBatchingWindowInSeconds']} s, "
            f"{mapping['FunctionResponseTypes']}, bisect {mapping['BisectBatchOnFunctionError']}, "
            f"retries {mapping['MaximumRetryAttempts']}, max age "
            f"{mapping['MaximumRecordAgeInSeconds']} s, on failure "
            f"{destination.get('Destination')}, parallelization "
            f"{mapping.get('ParallelizationFactor')}"
        )
    for mapping in deployment.get("work_trigger", []):
        print(
            f"  work trigger {mapping['UUID']}: {mapping['EventSourceArn']} batch "
            f"{mapping['BatchSize']} ({mapping['State']})"
        )
    sys.stdout.flush()


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


def status_check(stage: Stage) -> int:
    """Print each difference between the deployed triggers and the configuration; 1 if any."""
    problems = check_deployment(spec_for(stage))
    if not problems:
        print(
            f"check: stage {stage.name} at {endpoint_label()}: the Kinesis and SQS triggers "
            "match the configuration",
            flush=True,
        )
        return 0
    for problem in problems:
        print(f"check failed: {problem}", file=sys.stderr)
    print(
        f"{len(problems)} difference(s) from the configuration: run `python -m infra.deploy "
        f"deploy --stage {stage.name}` (a bare `chalice deploy` does not apply these settings)",
        file=sys.stderr,
    )
    return 1


def _confirmed(stage: Stage) -> bool:
    if not sys.stdin.isatty():
        print(f"refusing to remove stage {stage.name} without --yes", file=sys.stderr)
        return False
    answer = input(f"remove stage {stage.name} and all its data from {endpoint_label()}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


if __name__ == "__main__":
    sys.exit(main())
