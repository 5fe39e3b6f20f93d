"""Where a command goes and whether it may: the stage's `StackSpec`, the endpoint, and the
guards every command runs first (an emulator stage needs an endpoint, a real one its pinned
account and region, fresh IAM policy files and a passing preflight)."""

from __future__ import annotations

import os
import sys

from chalicelib.aws import clients as aws
from infra import policies, preflight
from infra.names import WORKER_FUNCTION
from infra.network import endpoints_of_stage
from infra.spec import StackSpec
from infra.stages import EMULATOR_STAGES, Stage
from infra.trigger import LOAD_FUNCTION

SCHEDULED_FUNCTION = "ingest"
"""The function Chalice subscribes to the work queue (`@app.on_sqs_message`)."""
CHALICE_DEFAULT_TIMEOUT_S = 60


class DeployError(RuntimeError):
    """A step failed; the message says which and what to do."""


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


def check_policies(stage: Stage) -> None:
    problems = policies.stale_files(stage.project_dir)
    if problems:
        raise DeployError(
            "IAM policy files are stale:\n  "
            + "\n  ".join(problems)
            + "\nrun `python -m infra.policies` and review the diff"
        )
