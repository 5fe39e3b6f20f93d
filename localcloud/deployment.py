"""The local cloud's stage, deployed through the deploy code and read back from the emulator.

`deploy_stage` runs `infra.deploy.deploy` (what `make deploy-local` runs: infrastructure,
`chalice deploy`, the trigger's failure settings, alarms and dashboard) against the moto
server, on a Chalice project folder in the cloud's state dir whose code is the work tree's
(symlinks) and whose config is `.chalice/config.json` with the local stage's variables set
for this cloud (API URL, shards, secret...). Only the building of the dependencies into the
deployment package is skipped (the functions run in this process, from the work tree).

`read_deployed` then reads back what the drivers emulate, from the emulator's APIs only, the
way Lambda and EventBridge themselves know it: each function's configuration
(`GetFunctionConfiguration`: environment, memory, timeout, role), the schedule rules and their
targets (`ListRules`, `ListTargetsByRule`) and the event-source mappings
(`ListEventSourceMappings`). A setting missing from the deployment is missing from the run.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.aws import clients as aws
from infra import policies
from infra.chalice_config import read_config, write_config
from infra.deploy import Report, deploy
from infra.stages import FUNCTIONS, PROJECT_ROOT, Stage
from infra.trigger import KinesisEventSourceSettings

STAGE = "local"
CODE = ("app.py", "chalicelib", "requirements.txt")
"""What the Chalice project folder links from the work tree."""


class DeploymentError(RuntimeError):
    """The stage in the emulator lacks something the local cloud needs to run it."""


def local_project(folder: Path, environment: dict[str, str]) -> Path:
    """A Chalice project in `folder`: the work tree's code (symlinked), its config with the
    local stage's `environment_variables` updated by `environment`, policies regenerated for
    those names. Chalice keeps its deployed-state file there, not in the work tree (and it is
    dropped first: the emulator is new, nothing of an earlier deploy exists in it)."""
    folder = folder.resolve()  # the deploy runs Chalice from the project root
    chalice_dir = folder / ".chalice"
    chalice_dir.mkdir(parents=True, exist_ok=True)
    # each cloud is a new emulator: what an earlier one deployed is gone with it
    shutil.rmtree(chalice_dir / "deployed", ignore_errors=True)
    for name in CODE:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(PROJECT_ROOT / name)
    config = read_config()
    variables = config["stages"][STAGE].setdefault("environment_variables", {})
    variables.update(environment)
    write_config(config, folder)
    for path in (PROJECT_ROOT / ".chalice").glob("policy-*.json"):
        shutil.copyfile(path, chalice_dir / path.name)
    policies.write_all(folder)
    return folder


def deploy_stage(project: Path, log_path: Path) -> Report:
    """`infra.deploy.deploy` of the local stage of `project`, its output in `log_path`."""
    stage = Stage.load(STAGE, project)
    with log_path.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        return deploy(stage, app_only=True, output=log)


@dataclass(frozen=True)
class DeployedFunction:
    """One function as Lambda knows it (`GetFunctionConfiguration`)."""

    name: str
    arn: str
    role: str
    memory_mb: int
    timeout_s: int
    environment: dict[str, str]


@dataclass(frozen=True)
class KinesisTrigger:
    """The load function's Kinesis mapping, as `ListEventSourceMappings` returns it."""

    uuid: str
    stream_arn: str
    function: str
    settings: KinesisEventSourceSettings
    destination_url: str | None


@dataclass(frozen=True)
class SqsTrigger:
    uuid: str
    queue_arn: str
    queue_url: str
    function: str
    batch_size: int


@dataclass
class DeployedStage:
    """What the drivers emulate, by Chalice function name."""

    functions: dict[str, DeployedFunction] = field(default_factory=dict)
    schedules: dict[str, str] = field(default_factory=dict)
    """{function: ARN of the enabled rule that targets it}."""
    kinesis: KinesisTrigger | None = None
    work: SqsTrigger | None = None

    def function(self, name: str) -> DeployedFunction:
        if name not in self.functions:
            raise DeploymentError(f"function {name} is not deployed")
        return self.functions[name]

    def schedule(self, function: str) -> str:
        if function not in self.schedules:
            raise DeploymentError(f"no enabled schedule rule targets the {function} function")
        return self.schedules[function]

    def environment(self, function: str | None = None) -> dict[str, str]:
        """`function`'s deployed environment; without one, the environment every function
        has (the handlers run as threads of one process then, so it must be one)."""
        if function is not None:
            return dict(self.function(function).environment)
        environments = {name: f.environment for name, f in self.functions.items()}
        first = next(iter(environments.values()), {})
        differing = sorted(name for name, env in environments.items() if env != first)
        if differing:
            raise DeploymentError(
                "the functions are deployed with different environments "
                f"({', '.join(differing)} differ): the local cloud runs them in one process"
            )
        return dict(first)


def read_deployed(stage: Stage) -> DeployedStage:
    """Read the deployed stage back from the emulator's Lambda, EventBridge and SQS APIs."""
    lambda_client = aws.client("lambda")
    deployed = DeployedStage()
    by_arn: dict[str, str] = {}
    for function in FUNCTIONS:
        configuration = lambda_client.get_function_configuration(
            FunctionName=stage.function_name(function)
        )
        deployed.functions[function] = DeployedFunction(
            name=configuration["FunctionName"],
            arn=configuration["FunctionArn"],
            role=configuration["Role"],
            memory_mb=int(configuration.get("MemorySize", 128)),
            timeout_s=int(configuration.get("Timeout", 3)),
            environment=dict(configuration.get("Environment", {}).get("Variables", {})),
        )
        by_arn[_unqualified(configuration["FunctionArn"])] = function
    deployed.schedules = _schedules(by_arn)
    sqs = aws.client("sqs")
    for page in lambda_client.get_paginator("list_event_source_mappings").paginate():
        for mapping in page["EventSourceMappings"]:
            target = by_arn.get(_unqualified(mapping["FunctionArn"]))
            if target is None or mapping.get("State", "Enabled") != "Enabled":
                continue
            source = mapping["EventSourceArn"]
            if source.startswith("arn:aws:kinesis:"):
                deployed.kinesis = _kinesis_trigger(mapping, target, sqs)
            elif source.startswith("arn:aws:sqs:"):
                deployed.work = SqsTrigger(
                    uuid=mapping["UUID"],
                    queue_arn=source,
                    queue_url=_queue_url(sqs, source),
                    function=target,
                    batch_size=int(mapping.get("BatchSize", 10)),
                )
    return deployed


def _unqualified(arn: str) -> str:
    """`...:function:NAME[:VERSION]` -> `...:function:NAME`."""
    head, _, rest = arn.partition(":function:")
    return f"{head}:function:{rest.split(':')[0]}"


def _schedules(by_arn: dict[str, str]) -> dict[str, str]:
    events = aws.client("events")
    schedules: dict[str, str] = {}
    for page in events.get_paginator("list_rules").paginate():
        for rule in page["Rules"]:
            if not rule.get("ScheduleExpression") or rule.get("State") != "ENABLED":
                continue
            targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
            for target in targets:
                function = by_arn.get(_unqualified(target["Arn"]))
                if function is not None:
                    schedules[function] = rule["Arn"]
    return schedules


def _kinesis_trigger(mapping: dict[str, Any], function: str, sqs: Any) -> KinesisTrigger:
    """The mapping's settings exactly as deployed: an absent setting is Lambda's default."""
    settings = KinesisEventSourceSettings.from_api(mapping)
    destination = settings.on_failure_destination_arn
    return KinesisTrigger(
        uuid=mapping["UUID"],
        stream_arn=mapping["EventSourceArn"],
        function=function,
        settings=settings,
        destination_url=_queue_url(sqs, destination) if destination else None,
    )


def _queue_url(sqs: Any, queue_arn: str) -> str:
    _, _, _, _, account, name = queue_arn.split(":", 5)
    return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
