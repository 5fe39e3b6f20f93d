"""The local cloud's stage: its variables, its deploy into the emulator, what is read back.

The stage is deployed by the deploy code (`localcloud/deployment.py`) with this cloud's API
URL, shards and secret on top of `.chalice/config.json`; the drivers then work from what the
emulator says was deployed, read again before each run (an operator may have changed a
function or a mapping since, as `UpdateEventSourceMapping` does here for `event_source`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chalicelib.aws import clients as aws
from chalicelib.settings import Settings
from infra import names
from infra.chalice_config import stage_environment
from infra.provision import Provisioned, StackResult, provisioned_from
from infra.stages import Stage
from infra.trigger import KinesisEventSourceSettings
from localcloud.deployment import STAGE, DeployedStage, DeploymentError, deploy_stage, local_project

RECONCILE_GRACE_S = "0"
"""The local stage's PIPELINE_RECONCILE_GRACE_S: the cloud fires the reconcile schedule only
once its drivers have drained everything, so nothing of the run can still be in flight."""


def wants_postgres(extra_env: dict[str, str]) -> bool:
    """Whether the local stage (with the cloud's extra variables) writes to PostgreSQL."""
    environment = {**stage_environment(STAGE), **extra_env}
    sinks = environment.get("PIPELINE_SINKS", Settings.model_fields["sinks"].default)
    return "postgres" in [name.strip() for name in str(sinks).split(",")]


def stage_variables(api_url: str, shard_count: int, extra_env: dict[str, str]) -> dict[str, str]:
    """The local stage's variables for this cloud, on top of `.chalice/config.json`."""
    environment = {
        "PIPELINE_API_URL": api_url,
        "PIPELINE_STREAM_SHARDS": str(shard_count),
        "PIPELINE_RECONCILE_GRACE_S": RECONCILE_GRACE_S,
    }
    if wants_postgres(extra_env):
        prefix = {**stage_environment(STAGE), **extra_env}["PIPELINE_TABLE_PREFIX"]
        environment["PIPELINE_POSTGRES_SECRET_ARN"] = names.postgres_secret(prefix)
    environment.update(extra_env)
    return environment


def deploy(state_dir: Path, variables: dict[str, str]) -> tuple[Stage, Provisioned]:
    """Deploy the stage into the emulator with the deploy code: the stage and what it made."""
    project = local_project(state_dir / "project", variables)
    report = deploy_stage(project, state_dir / "deploy.log")
    stage = Stage.load(STAGE, project)
    return stage, provisioned_from(stage.settings, StackResult(report.infra, report.attributes))


def attached_stage(state: dict[str, Any]) -> tuple[Stage, Provisioned]:
    """The stage a running cloud (`localcloud up`) deployed, from its state file."""
    stage = Stage.load(STAGE, Path(state["project"]))
    return stage, provisioned_from(stage.settings, StackResult([], state["attributes"]))


def mapping_settings(deployed: DeployedStage) -> KinesisEventSourceSettings:
    """The load trigger's settings as deployed."""
    if deployed.kinesis is None:
        raise DeploymentError("no enabled event-source mapping from the stream to load")
    return deployed.kinesis.settings


def update_event_source(deployed: DeployedStage, settings: KinesisEventSourceSettings) -> None:
    """Change the deployed load mapping to `settings`, as an operator would with
    UpdateEventSourceMapping (settings it leaves out keep their deployed value)."""
    assert deployed.kinesis is not None
    parameters = settings.as_api_parameters()
    parameters.pop("ParallelizationFactor", None)
    aws.client("lambda").update_event_source_mapping(UUID=deployed.kinesis.uuid, **parameters)
