"""The commands that change a stage or write its packages: `deploy`, `destroy`, `package`."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from infra.cloudformation import add_to_terraform, infra_template, sam_merge_template
from infra.deploy.chalice_runner import run_chalice
from infra.deploy.status import describe_deployment, print_deployment
from infra.deploy.target import (
    check_account,
    check_policies,
    check_preflight,
    check_target,
    endpoint_label,
    spec_for,
)
from infra.monitoring import apply_monitoring, remove_monitoring
from infra.provision import FAILURE_QUEUE, STREAM, StackResult, apply_stack, destroy_stack
from infra.resources import Change
from infra.stages import FUNCTIONS, Stage
from infra.trigger import apply_failure_settings


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
    print_deployment(report.deployment)
    return report


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


def _print_changes(title: str, changes: list[Change]) -> None:
    print(f"{title}:")
    for change in changes:
        print(f"  {change}")
    sys.stdout.flush()
