"""`make deploy-local` against a fresh moto server creates the whole system; destroy removes it.

The deploy runs exactly as the Makefile runs it (`python -m infra.deploy deploy --stage
localstack` with the emulator's endpoint and dummy credentials), on a copy of the project so
that Chalice's deployed-state file stays out of the working tree. Chalice's dependency package
is cached in `.chalice/deployments/` (its own cache, git-ignored): only the first run after a
change of requirements.txt builds it, which downloads Linux wheels from PyPI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint

from infra.chalice_config import read_config, write_config
from infra.provision import stack_resources
from infra.spec import StackSpec
from infra.stages import FUNCTIONS, PROJECT_ROOT, Stage
from infra.trigger import KinesisEventSourceSettings
from localcloud.emulators.moto_process import MotoServer
from tests.helpers.factories import make_commands
from tests.helpers.preflight_helpers import make_ready

STAGE = "localstack"  # what `make deploy-local` deploys by default
REGION = "us-east-1"


def copy_project(target: Path) -> Path:
    """The Chalice project (app, code, requirements, config, policies), sharing the dep cache."""
    target.mkdir(parents=True)
    for name in ("app.py", "requirements.txt"):
        shutil.copyfile(PROJECT_ROOT / name, target / name)
    shutil.copytree(
        PROJECT_ROOT / "chalicelib",
        target / "chalicelib",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (target / ".chalice").mkdir()
    for path in (PROJECT_ROOT / ".chalice").glob("*.json"):
        shutil.copyfile(path, target / ".chalice" / path.name)
    cache = PROJECT_ROOT / ".chalice" / "deployments"
    cache.mkdir(exist_ok=True)
    (target / ".chalice" / "deployments").symlink_to(cache, target_is_directory=True)
    return target


@pytest.fixture
def own_project(tmp_path: Path) -> Path:
    """A copy of the project for one test, whose config and policy files it may change."""
    return copy_project(tmp_path / "project")


def offline_environment() -> dict[str, str]:
    """This process's environment without its AWS_* and PIPELINE_* variables (no profile, no
    endpoint, no stage settings), in the tests' region."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "PIPELINE_"))
    }
    environment["AWS_DEFAULT_REGION"] = REGION
    return environment


def emulator_environment(endpoint: str) -> dict[str, str]:
    """What the Makefile's LOCAL_AWS gives the deploy: endpoint, dummy keys, no profile."""
    return {
        **offline_environment(),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }


@contextmanager
def boto3_pointed_at(environment: dict[str, str]) -> Iterator[None]:
    """This process's boto3 clients (`chalicelib.aws.clients`) use `environment` inside."""
    from chalicelib.aws import clients as aws

    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        aws.client.cache_clear()
        try:
            yield
        finally:
            aws.client.cache_clear()


def deploy_cli(
    *arguments: str, environment: dict[str, str], timeout: float = 1200, stdin: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m infra.deploy ARGUMENTS...` in a process of its own, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "infra.deploy", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=stdin,
    )


def run_deploy_cli(*arguments: str, environment: dict[str, str]) -> str:
    completed = deploy_cli(*arguments, environment=environment)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return output


def section(output: str, title: str) -> list[str]:
    """The indented lines printed under `title:`."""
    lines = output.splitlines()
    start = lines.index(f"{title}:") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        block.append(line.strip())
    return block


class Cloud:
    """Clients of the moto server, and a snapshot of everything a deployment can own."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def snapshot(self) -> dict[str, Any]:
        aws_lambda, iam, events = self.client("lambda"), self.client("iam"), self.client("events")
        functions = {}
        for function in aws_lambda.list_functions()["Functions"]:
            name = function["FunctionName"]
            functions[name] = {
                key: function.get(key)
                for key in (
                    *("FunctionArn", "Runtime", "Handler", "MemorySize", "Timeout", "Role"),
                    *("CodeSha256", "Environment", "VpcConfig"),
                )
            }
            functions[name]["ReservedConcurrentExecutions"] = aws_lambda.get_function_concurrency(
                FunctionName=name
            ).get("ReservedConcurrentExecutions")
        roles = {
            role["RoleName"]: {
                policy: iam.get_role_policy(RoleName=role["RoleName"], PolicyName=policy)[
                    "PolicyDocument"
                ]
                for policy in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
            }
            for role in iam.list_roles()["Roles"]
        }
        rules = {
            rule["Name"]: {
                "ScheduleExpression": rule.get("ScheduleExpression"),
                "State": rule.get("State"),
                "Targets": [
                    target["Arn"]
                    for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
                ],
            }
            for rule in events.list_rules()["Rules"]
        }
        mappings = [
            {key: value for key, value in mapping.items() if key != "LastModified"}
            for mapping in aws_lambda.list_event_source_mappings()["EventSourceMappings"]
        ]
        kinesis = self.client("kinesis")
        streams = {
            name: {
                key: summary.get(key)
                for key in ("StreamARN", "OpenShardCount", "EncryptionType", "RetentionPeriodHours")
            }
            for name in kinesis.list_streams()["StreamNames"]
            for summary in [
                kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            ]
        }
        logs = self.client("logs").describe_log_groups()["logGroups"]
        return {
            "functions": functions,
            "roles": roles,
            "rules": rules,
            "mappings": mappings,
            "streams": streams,
            "tables": sorted(self.client("dynamodb").list_tables()["TableNames"]),
            "queues": sorted(self.client("sqs").list_queues().get("QueueUrls", [])),
            "secrets": sorted(
                s["Name"] for s in self.client("secretsmanager").list_secrets()["SecretList"]
            ),
            "buckets": sorted(b["Name"] for b in self.client("s3").list_buckets()["Buckets"]),
            "topics": sorted(t["TopicArn"] for t in self.client("sns").list_topics()["Topics"]),
            "alarms": sorted(
                alarm["AlarmName"]
                for alarm in self.client("cloudwatch").describe_alarms()["MetricAlarms"]
            ),
            "dashboards": sorted(
                board["DashboardName"]
                for board in self.client("cloudwatch").list_dashboards()["DashboardEntries"]
            ),
            "log_groups": {group["logGroupName"]: group.get("retentionInDays") for group in logs},
        }


@dataclass
class Deployment:
    cloud: Cloud
    project: Path
    environment: dict[str, str]
    stage: Stage
    first_output: str
    first: dict[str, Any]
    second_output: str
    second: dict[str, Any]

    @property
    def spec(self) -> StackSpec:
        return spec_of(self.stage)


def deploy_once(root: Path, moto: MotoServer) -> tuple[Path, dict[str, str], Cloud, str]:
    """A copy of the project deployed to `moto` once, as `make deploy-local` deploys it."""
    project = copy_project(root / "project")
    environment = emulator_environment(moto.url)
    output = run_deploy_cli(
        "deploy", "--stage", STAGE, "--project-dir", str(project), environment=environment
    )
    return project, environment, Cloud(moto.url), output


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A fresh moto server, deployed to twice the way `make deploy-local` deploys.

    Tests that change it restore what they changed; the destroy has a deployment of its own."""
    root = tmp_path_factory.mktemp("deploy")
    with MotoServer(root / "moto.log") as moto:
        project, environment, cloud, first_output = deploy_once(root, moto)
        first = cloud.snapshot()
        second_output = run_deploy_cli(
            "deploy", "--stage", STAGE, "--project-dir", str(project), environment=environment
        )
        second = cloud.snapshot()
        yield Deployment(
            cloud,
            project,
            environment,
            Stage.load(STAGE, project),
            first_output,
            first,
            second_output,
            second,
        )


def spec_of(stage: Stage) -> StackSpec:
    return StackSpec(stage.settings, stage=stage.name, app_name=stage.app_name)


def test_every_infrastructure_resource_is_created_then_left_alone(deployment: Deployment) -> None:
    first = section(deployment.first_output, "infrastructure")
    second = section(deployment.second_output, "infrastructure")
    for resource in stack_resources(deployment.spec):
        assert any(line.startswith("created") and resource.label in line for line in first)
        assert any(line.startswith("unchanged") and resource.label in line for line in second)
    assert len(first) == len(second) == len(stack_resources(deployment.spec))


def test_both_functions_run_with_the_stage_settings_and_their_own_roles(
    deployment: Deployment,
) -> None:
    stage, snapshot, spec = deployment.stage, deployment.first, deployment.spec
    for function in FUNCTIONS:
        deployed = snapshot["functions"][spec.function_name(function)]
        assert deployed["Handler"] == f"app.{function}"
        assert deployed["MemorySize"] == stage.function_setting(function, "lambda_memory_size")
        assert deployed["Timeout"] == stage.function_setting(function, "lambda_timeout")
        assert deployed["ReservedConcurrentExecutions"] == stage.function_setting(
            function, "reserved_concurrency"
        )
        assert deployed["Environment"]["Variables"] == stage.environment
        role = deployed["Role"].rsplit("/", 1)[-1]
        policy_file = stage.project_dir / ".chalice" / f"policy-{stage.name}-{function}.json"
        assert list(snapshot["roles"][role].values()) == [json.loads(policy_file.read_text())]
    assert (
        deployment.first["functions"][spec.function_name("ingest")]["ReservedConcurrentExecutions"]
        == 1
    )
    retention = stage.function_setting("load", "log_retention_in_days")
    for function in FUNCTIONS:
        assert snapshot["log_groups"][f"/aws/lambda/{spec.function_name(function)}"] == retention


def test_the_schedule_rule_targets_the_ingest_function(deployment: Deployment) -> None:
    stage, spec = deployment.stage, deployment.spec
    rule = deployment.first["rules"][stage.rule_name("ingest")]
    assert rule["ScheduleExpression"] == stage.environment["PIPELINE_SCHEDULE"]
    assert rule["State"] == "ENABLED"
    ingest = deployment.first["functions"][spec.function_name("ingest")]
    assert rule["Targets"] == [ingest["FunctionArn"]]
    policy = json.loads(
        deployment.cloud.client("lambda").get_policy(FunctionName=spec.function_name("ingest"))[
            "Policy"
        ]
    )
    assert [s["Principal"] for s in policy["Statement"]] == [{"Service": "events.amazonaws.com"}]


def test_the_kinesis_trigger_has_the_failure_settings(deployment: Deployment) -> None:
    stage, spec = deployment.stage, deployment.spec
    stream = deployment.first["streams"][stage.settings.stream_name]
    (mapping,) = [
        m for m in deployment.first["mappings"] if m["EventSourceArn"] == stream["StreamARN"]
    ]
    queue_url = next(url for url in deployment.first["queues"] if url.endswith("-load-failures"))
    queue_arn = deployment.cloud.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert mapping["EventSourceArn"] == stream["StreamARN"]
    assert (
        mapping["FunctionArn"]
        == deployment.first["functions"][spec.function_name("load")]["FunctionArn"]
    )
    assert mapping["BatchSize"] == stage.settings.batch_size
    assert mapping["MaximumBatchingWindowInSeconds"] == stage.settings.batching_window_s
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == stage.settings.trigger_retry_attempts
    assert mapping["MaximumRecordAgeInSeconds"] == stage.settings.trigger_max_record_age_s
    assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": queue_arn}}
    assert mapping["ParallelizationFactor"] == 1  # one batch per shard: read-compare-write
    expected = KinesisEventSourceSettings.from_spec(spec, queue_arn).failure_parameters()
    assert {key: mapping[key] for key in expected} == expected


def queue(cloud: Cloud, name: str) -> dict[str, str]:
    sqs = cloud.client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def test_the_worker_is_triggered_by_the_work_queue_one_item_at_a_time(
    deployment: Deployment,
) -> None:
    stage, spec = deployment.stage, deployment.spec
    work = queue(deployment.cloud, stage.environment["PIPELINE_WORK_QUEUE"])
    dead_letter = queue(deployment.cloud, f"{stage.settings.table_prefix}-ingest-work-dlq")
    (mapping,) = [
        m for m in deployment.first["mappings"] if m["EventSourceArn"] == work["QueueArn"]
    ]
    worker = deployment.first["functions"][spec.function_name("ingest_worker")]
    assert mapping["FunctionArn"] == worker["FunctionArn"]
    assert mapping["BatchSize"] == 1
    assert worker["Handler"] == "app.ingest_worker"
    assert int(work["VisibilityTimeout"]) >= 6 * worker["Timeout"] == 5400
    assert json.loads(work["RedrivePolicy"]) == {
        "deadLetterTargetArn": dead_letter["QueueArn"],
        "maxReceiveCount": 3,
    }
    assert work["SqsManagedSseEnabled"] == dead_letter["SqsManagedSseEnabled"] == "true"
    assert int(dead_letter["MessageRetentionPeriod"]) == 14 * 86400
    printed = section(deployment.first_output, "deployed")
    assert any(
        line.startswith("work trigger ") and work["QueueArn"] in line and "batch 1" in line
        for line in printed
    )


def test_the_data_stores_exist_and_are_locked_down(deployment: Deployment) -> None:
    settings = deployment.stage.settings
    snapshot = deployment.first
    stream = snapshot["streams"][settings.stream_name]
    assert stream["OpenShardCount"] == settings.stream_shards
    assert stream["EncryptionType"] == "KMS"
    assert snapshot["tables"] == sorted(
        settings.table_name(suffix)
        for suffix in ("users", "tracks", "listen_history", "runs", "run-pages")
    )
    assert snapshot["buckets"] == [settings.quarantine_bucket]
    s3 = deployment.cloud.client("s3")
    blocks = s3.get_public_access_block(Bucket=settings.quarantine_bucket)
    assert all(blocks["PublicAccessBlockConfiguration"].values())
    encryption = s3.get_bucket_encryption(Bucket=settings.quarantine_bucket)
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (lifecycle,) = s3.get_bucket_lifecycle_configuration(Bucket=settings.quarantine_bucket)["Rules"]
    assert lifecycle["Expiration"] == {"Days": settings.quarantine_retention_days} == {"Days": 30}
    assert lifecycle["Status"] == "Enabled"
    prefix = settings.table_prefix
    assert [url.rsplit("/", 1)[-1] for url in snapshot["queues"]] == [
        f"{prefix}-ingest-work",
        f"{prefix}-ingest-work-dlq",
        f"{prefix}-load-failures",
    ]
    assert snapshot["secrets"] == [f"{prefix}/postgres"]
    secret = deployment.cloud.client("secretsmanager").get_secret_value(
        SecretId=f"{prefix}/postgres"
    )
    assert set(json.loads(secret["SecretString"])) == {"username", "password"}
    assert [arn.rsplit(":", 1)[-1] for arn in snapshot["topics"]] == [f"{prefix}-alarms"]


def test_the_alarms_and_the_dashboard_exist(deployment: Deployment) -> None:
    from infra.alarms import alarm_definitions
    from infra.stage import StageResources

    stage = deployment.stage
    resources = StageResources.from_settings(stage.settings, stage.name)
    expected = sorted(alarm["AlarmName"] for alarm in alarm_definitions(resources, "TOPIC"))
    assert deployment.first["alarms"] == expected
    assert deployment.first["dashboards"] == [resources.dashboard]
    alarms = deployment.cloud.client("cloudwatch").describe_alarms()["MetricAlarms"]
    topic = f"{stage.settings.table_prefix}-alarms"
    assert all(alarm["AlarmActions"][0].endswith(f":{topic}") for alarm in alarms)
    assert all("operations.md#" in alarm["AlarmDescription"] for alarm in alarms)


def test_the_deploy_prints_what_exists(deployment: Deployment) -> None:
    spec = deployment.spec
    printed = section(deployment.first_output, "deployed")
    assert any(spec.function_name("ingest") in line for line in printed)
    assert any(spec.function_name("load") in line for line in printed)
    assert any(line.startswith("schedule ") for line in printed)
    assert any(
        line.startswith("trigger ") and "ReportBatchItemFailures" in line for line in printed
    )
    assert section(deployment.first_output, "trigger")[0].startswith("updated")


def test_a_second_deploy_changes_nothing(deployment: Deployment) -> None:
    assert deployment.second == deployment.first
    assert all(
        line.startswith("unchanged") for line in section(deployment.second_output, "infrastructure")
    )
    assert section(deployment.second_output, "trigger")[0].startswith("unchanged")


def status_check(deployment: Deployment) -> subprocess.CompletedProcess[str]:
    """`python -m infra.deploy status --check`, as `make deploy-local` ends."""
    return deploy_cli(
        *("status", "--stage", STAGE, "--project-dir", str(deployment.project), "--check"),
        environment=deployment.environment,
        timeout=300,
    )


def test_status_check_passes_on_a_correct_deploy(deployment: Deployment) -> None:
    checked = status_check(deployment)
    assert checked.returncode == 0, checked.stderr
    assert "match the configuration" in checked.stdout
    assert checked.stderr == ""


def load_mapping(deployment: Deployment) -> dict[str, Any]:
    stage = deployment.stage
    aws_lambda = deployment.cloud.client("lambda")
    stream_arn = deployment.first["streams"][stage.settings.stream_name]["StreamARN"]
    (mapping,) = aws_lambda.list_event_source_mappings(EventSourceArn=stream_arn)[
        "EventSourceMappings"
    ]
    return dict(mapping)


@pytest.mark.parametrize(
    ("change", "setting", "shown"),
    [
        ({"FunctionResponseTypes": []}, "FunctionResponseTypes", "[] , configured ['Report"),
        ({"BisectBatchOnFunctionError": False}, "BisectBatchOnFunctionError", "False"),
        ({"MaximumRetryAttempts": 10_000}, "MaximumRetryAttempts", "10000"),
        ({"MaximumRecordAgeInSeconds": 604_800}, "MaximumRecordAgeInSeconds", "604800"),
        ({"DestinationConfig": {"OnFailure": {}}}, "DestinationConfig", "{'OnFailure': {}}"),
        ({"ParallelizationFactor": 2}, "ParallelizationFactor", "is 2, configured 1"),
        ({"BatchSize": 7}, "BatchSize", "is 7, configured 500"),
        ({"MaximumBatchingWindowInSeconds": 0}, "MaximumBatchingWindowInSeconds", "is 0"),
    ],
)
def test_status_check_names_a_changed_kinesis_trigger_setting(
    deployment: Deployment, change: dict[str, Any], setting: str, shown: str
) -> None:
    aws_lambda = deployment.cloud.client("lambda")
    mapping = load_mapping(deployment)
    original = {key: mapping[key] for key in change}
    aws_lambda.update_event_source_mapping(UUID=mapping["UUID"], **change)
    try:
        checked = status_check(deployment)
    finally:
        aws_lambda.update_event_source_mapping(UUID=mapping["UUID"], **original)
    assert checked.returncode == 1
    (problem,) = [line for line in checked.stderr.splitlines() if line.startswith("check failed")]
    assert f"kinesis mapping {deployment.stage.settings.stream_name} -> " in problem
    assert f": {setting} is " in problem
    assert shown.replace(" , ", ", ") in problem
    assert "python -m infra.deploy deploy --stage localstack" in checked.stderr
    assert status_check(deployment).returncode == 0


def test_status_check_catches_a_bare_chalice_deploy_and_the_deploy_repairs_it(
    deployment: Deployment,
) -> None:
    """What `chalice deploy` alone leaves on a fresh stage: a mapping with AWS's defaults."""
    from chalicelib.aws import clients as aws
    from infra.deploy import spec_for
    from infra.provision import FAILURE_QUEUE, STREAM, apply_stack
    from infra.trigger import apply_failure_settings

    aws_lambda = deployment.cloud.client("lambda")
    mapping = load_mapping(deployment)
    aws_lambda.update_event_source_mapping(
        UUID=mapping["UUID"],
        FunctionResponseTypes=[],
        BisectBatchOnFunctionError=False,
        MaximumRetryAttempts=-1,
        MaximumRecordAgeInSeconds=-1,
        DestinationConfig={"OnFailure": {}},
    )
    checked = status_check(deployment)
    assert checked.returncode == 1
    named = {
        line.split(": ", 2)[2].split(" is ")[0]
        for line in checked.stderr.splitlines()
        if line.startswith("check failed")
    }
    assert named == {
        "FunctionResponseTypes",
        "BisectBatchOnFunctionError",
        "MaximumRetryAttempts",
        "MaximumRecordAgeInSeconds",
        "DestinationConfig",
    }
    assert "Lambda ignores the function's batchItemFailures" in checked.stderr
    with boto3_pointed_at(deployment.environment):
        spec = spec_for(deployment.stage)
        applied = apply_stack(spec).attributes
        repaired = apply_failure_settings(
            aws.client("lambda"), spec, applied[STREAM]["Arn"], applied[FAILURE_QUEUE]["Arn"]
        )
    assert repaired.action == "updated"
    assert status_check(deployment).returncode == 0


def test_status_check_names_a_changed_work_queue_trigger(deployment: Deployment) -> None:
    stage = deployment.stage
    aws_lambda, sqs = deployment.cloud.client("lambda"), deployment.cloud.client("sqs")
    work_url = sqs.get_queue_url(QueueName=stage.environment["PIPELINE_WORK_QUEUE"])["QueueUrl"]
    work = queue(deployment.cloud, stage.environment["PIPELINE_WORK_QUEUE"])
    (mapping,) = aws_lambda.list_event_source_mappings(EventSourceArn=work["QueueArn"])[
        "EventSourceMappings"
    ]
    aws_lambda.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=10)
    sqs.set_queue_attributes(QueueUrl=work_url, Attributes={"RedrivePolicy": ""})
    try:
        checked = status_check(deployment)
    finally:
        aws_lambda.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=1)
        sqs.set_queue_attributes(
            QueueUrl=work_url, Attributes={"RedrivePolicy": work["RedrivePolicy"]}
        )
    assert checked.returncode == 1
    problems = [line for line in checked.stderr.splitlines() if line.startswith("check failed")]
    assert len(problems) == 2
    assert "-ingest_worker" in problems[0]
    assert ": BatchSize is 10, configured 1" in problems[0]
    assert "RedrivePolicy is None" in problems[1]
    assert "not dead-lettered" in problems[1]
    assert status_check(deployment).returncode == 0


def test_destroy_removes_everything(tmp_path: Path) -> None:
    """On a deployment of its own (a moto server of its own): the others stay deployed."""
    with MotoServer(tmp_path / "moto.log") as moto:
        project, environment, cloud, _ = deploy_once(tmp_path, moto)
        assert cloud.snapshot()["functions"]
        output = run_deploy_cli(
            "destroy",
            "--stage",
            STAGE,
            "--project-dir",
            str(project),
            "--yes",
            environment=environment,
        )
        removed = section(output, "removed")
        for resource in stack_resources(spec_of(Stage.load(STAGE, project))):
            assert f"deleted   {resource.label}" in removed
        assert cloud.snapshot() == {
            "functions": {},
            "roles": {},
            "rules": {},
            "mappings": [],
            "streams": {},
            "tables": [],
            "queues": [],
            "secrets": [],
            "buckets": [],
            "topics": [],
            "alarms": [],
            "dashboards": [],
            "log_groups": {},
        }
        again = run_deploy_cli(
            "destroy",
            "--stage",
            STAGE,
            "--project-dir",
            str(project),
            "--yes",
            environment=environment,
        )
        assert all(line.startswith("absent") for line in section(again, "removed"))


# --------------------------------------------------------------------------------------------
# chalice package
# --------------------------------------------------------------------------------------------


@dataclass
class Packaged:
    stage: Stage
    root: Path
    sam: dict[str, Any]
    sam_text: str
    infra_text: str
    terraform: dict[str, Any]

    @property
    def spec(self) -> StackSpec:
        return spec_of(self.stage)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    """`make package` for the dev stage, into a temporary folder."""
    out = tmp_path_factory.mktemp("package")
    run_deploy_cli(
        "package", "--stage", "dev", "--out", str(out), environment=offline_environment()
    )
    root = out / "dev"
    sam_text = (root / "cloudformation" / "sam.json").read_text()
    return Packaged(
        Stage.load("dev"),
        root,
        json.loads(sam_text),
        sam_text,
        (root / "infra.json").read_text(),
        json.loads((root / "terraform" / "chalice.tf.json").read_text()),
    )


def lint_errors(template_text: str) -> list[str]:
    return [str(match) for match in lint(template_text, config=ManualArgs(regions=[REGION]))]


def test_the_cloudformation_packages_pass_cfn_lint(packaged: Packaged) -> None:
    assert lint_errors(packaged.sam_text) == []
    assert lint_errors(packaged.infra_text) == []


def test_the_sam_template_holds_the_infrastructure_and_the_failure_settings(
    packaged: Packaged,
) -> None:
    spec = packaged.spec
    resources = packaged.sam["Resources"]
    for resource in stack_resources(spec):
        for logical_id, definition in resource.cloudformation().items():
            assert resources[logical_id] == definition
    load = resources["Load"]
    event = load["Properties"]["Events"]["LoadKinesisEventSource"]["Properties"]
    expected = KinesisEventSourceSettings.from_spec(spec).failure_parameters(
        {"Fn::GetAtt": ["LoadFailureQueue", "Arn"]}
    )
    assert {key: event[key] for key in expected} == expected
    assert event["ParallelizationFactor"] == 1
    assert event["Stream"]["Fn::Sub"].endswith(f":stream/{spec.settings.stream_name}")
    assert load["DependsOn"] == ["EventStream"]
    assert resources["Ingest"]["Properties"]["Events"]["IngestEvent"]["Properties"] == {
        "Schedule": packaged.stage.environment["PIPELINE_SCHEDULE"]
    }
    worker = resources["IngestWorker"]
    sqs_event = worker["Properties"]["Events"]["IngestWorkerSqsEventSource"]["Properties"]
    assert sqs_event["BatchSize"] == 1
    assert sqs_event["Queue"]["Fn::Sub"].endswith(f":{spec.work_queue_name}")
    assert worker["DependsOn"] == ["IngestWorkQueue"]
    assert resources["IngestWorkQueue"]["Properties"]["QueueName"] == spec.work_queue_name
    assert {"AlarmIngestWorkerErrors", "AlarmIngestWorkDlq"} <= set(resources)


def test_cfn_lint_checks_the_failure_settings_as_lambda_receives_them(packaged: Packaged) -> None:
    """SAM passes the Kinesis event's properties to AWS::Lambda::EventSourceMapping as they are."""

    def template(properties: dict[str, Any]) -> str:
        mapping = {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
                "FunctionName": "f",
                "StartingPosition": "TRIM_HORIZON",
                **properties,
            },
        }
        return json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"M": mapping}})

    event = packaged.sam["Resources"]["Load"]["Properties"]["Events"]["LoadKinesisEventSource"]
    failure = {
        key: value
        for key, value in event["Properties"].items()
        if key in KinesisEventSourceSettings.from_spec(packaged.spec).failure_parameters("")
    }
    failure["DestinationConfig"] = {
        "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:123456789012:q"}
    }
    assert lint_errors(template(failure)) == []
    assert lint_errors(template({**failure, "MaximumRetryAttempts": "ten"})) != []
    assert lint_errors(template({**failure, "BisectBatchOnFailure": True})) != []


TERRAFORM_REFERENCE = re.compile(r"\$\{(aws_[a-z0-9_]+|data\.[a-z0-9_]+)\.([A-Za-z0-9_-]+)")


def test_the_terraform_package_is_consistent(packaged: Packaged) -> None:
    terraform = packaged.terraform
    spec = packaged.spec
    resources, data = terraform["resource"], terraform["data"]
    assert set(terraform) >= {"resource", "data", "terraform"}
    for kind in (
        "aws_iam_role",
        "aws_iam_role_policy",
        "aws_lambda_function",
        "aws_cloudwatch_event_rule",
        "aws_cloudwatch_event_target",
        "aws_lambda_permission",
        "aws_lambda_event_source_mapping",
        "aws_cloudformation_stack",
        "aws_cloudwatch_log_group",
    ):
        assert resources.get(kind), kind
    text = json.dumps(terraform)
    for kind, name in TERRAFORM_REFERENCE.findall(text):
        if kind.startswith("data."):
            assert name in data[kind.removeprefix("data.")], f"{kind}.{name}"
        else:
            assert name in resources[kind], f"{kind}.{name}"
    for dependencies in re.findall(r'"depends_on": \[([^\]]*)\]', text):
        for dependency in json.loads(f"[{dependencies}]"):
            kind, name = dependency.split(".", 1)
            assert name in resources[kind], dependency
    stack = resources["aws_cloudformation_stack"]["infra"]
    assert "infra.json" in stack["template_body"]
    # docs/deploy.md warns up front about the versions Chalice pins and the wrapped stack
    document = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    quoted = [line.removeprefix("> ") for line in document.splitlines() if line.startswith(">")]
    warning = " ".join(quoted)
    assert warning.startswith("**Terraform, read this first.**")
    assert f"Terraform `{terraform['terraform']['required_version']}`" in warning
    provider = terraform["terraform"]["required_providers"]["aws"]["version"]
    assert f"AWS provider `{provider.replace('.0,', ',')}`" in warning
    assert "aws_cloudformation_stack" in warning
    assert (packaged.root / "terraform" / "infra.json").read_text() == packaged.infra_text
    assert (packaged.root / "terraform" / "deployment.zip").is_file()
    mapping = resources["aws_lambda_event_source_mapping"]["load-kinesis-event-source"]
    settings = spec.settings
    assert mapping["function_response_types"] == ["ReportBatchItemFailures"]
    assert mapping["bisect_batch_on_function_error"] is settings.trigger_bisect_on_error
    assert mapping["maximum_retry_attempts"] == settings.trigger_retry_attempts
    assert mapping["maximum_record_age_in_seconds"] == settings.trigger_max_record_age_s
    assert mapping["parallelization_factor"] == 1
    assert "LoadFailureQueueArn" in mapping["destination_config"]["on_failure"]["destination_arn"]
    assert "LoadFailureQueueArn" in json.loads(packaged.infra_text)["Outputs"]
    worker_mapping = resources["aws_lambda_event_source_mapping"]["ingest_worker-sqs-event-source"]
    assert worker_mapping["batch_size"] == 1
    assert worker_mapping["event_source_arn"].endswith(f":{settings.work_queue}")
    assert worker_mapping["depends_on"] == ["aws_cloudformation_stack.infra"]
    for function in FUNCTIONS:
        group = resources["aws_cloudwatch_log_group"][f"{function}-log-group"]
        assert group["name"] == f"/aws/lambda/{spec.function_name(function)}"
    rule = resources["aws_cloudwatch_event_rule"]["ingest-event"]
    assert rule["name"] == packaged.stage.rule_name("ingest")
    assert rule["schedule_expression"] == packaged.stage.environment["PIPELINE_SCHEDULE"]
    policies = resources["aws_iam_role_policy"]
    for function in FUNCTIONS:
        policy_file = PROJECT_ROOT / ".chalice" / f"policy-dev-{function}.json"
        assert json.loads(policies[f"{function}_role"]["policy"]) == json.loads(
            policy_file.read_text()
        )


# --------------------------------------------------------------------------------------------
# the Makefile runs this code path
# --------------------------------------------------------------------------------------------


def make_dry_run(*arguments: str, line: int = -1) -> str:
    """A command `make -n` prints (the last one by default)."""
    return make_commands(*arguments).strip().splitlines()[line]


def test_make_deploy_local_runs_the_tested_command_against_localstack_by_default() -> None:
    line = make_dry_run("deploy-local", line=-2)
    assert line.endswith(f"-m infra.deploy deploy --stage {STAGE}")
    check = make_dry_run("deploy-local")
    assert check.endswith(f"-m infra.deploy status --stage {STAGE} --check")
    assert "AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://localhost:4566}" in check
    assert "AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://localhost:4566}" in line
    assert "AWS_ACCESS_KEY_ID=test" in line
    assert "-u AWS_PROFILE" in line
    assert make_dry_run("destroy-local").endswith(f"-m infra.deploy destroy --stage {STAGE} --yes")


def test_make_aws_targets_take_the_stage() -> None:
    assert make_dry_run("deploy", "STAGE=prod", line=-2).endswith(
        "-m infra.deploy deploy --stage prod"
    )
    assert make_dry_run("deploy", "STAGE=prod").endswith(
        "-m infra.deploy status --stage prod --check"
    )
    assert make_dry_run("destroy").endswith("-m infra.deploy destroy --stage dev")
    assert make_dry_run("package").endswith("-m infra.deploy package --stage dev --out out")
    assert "AWS_ENDPOINT_URL" not in make_dry_run("deploy")


def test_a_stage_is_only_deployed_to_the_account_and_region_it_is_pinned_to(
    own_project: Path, moto_server: MotoServer
) -> None:
    """moto answers GetCallerIdentity with its account 123456789012; dev names 111122223333."""
    project = own_project
    make_ready(project, "dev")  # past the offline preflight (VPC, TLS) to the account check
    environment = emulator_environment(moto_server.url)
    for stage, region in (("dev", REGION), ("dev", "eu-west-1")):
        completed = deploy_cli(
            *("deploy", "--stage", stage, "--project-dir", str(project)),
            environment={**environment, "AWS_DEFAULT_REGION": region, "AWS_REGION": region},
            timeout=300,
        )
        assert completed.returncode == 1
        assert "stage dev is pinned to account 111122223333 in us-east-1" in completed.stderr
        assert f"deploy to account 123456789012 in {region}" in completed.stderr
        assert "infrastructure:" not in completed.stdout  # refused before any change
    config = read_config(project)
    config["stages"]["dev"]["infra"]["account_id"] = "123456789012"
    write_config(config, project)
    from infra.deploy.target import check_account

    with boto3_pointed_at(environment):
        check_account(Stage.load("dev", project))  # pinned where it deploys: accepted


def test_cli_guards_need_no_aws(own_project: Path) -> None:
    environment = offline_environment()
    emulator_without_endpoint = deploy_cli("deploy", "--stage", "local", environment=environment)
    assert emulator_without_endpoint.returncode == 1
    assert "set AWS_ENDPOINT_URL" in emulator_without_endpoint.stderr
    unconfirmed = deploy_cli(
        "destroy", "--stage", "dev", environment=environment, stdin=subprocess.DEVNULL
    )
    assert unconfirmed.returncode == 1
    assert "without --yes" in unconfirmed.stderr
    project = own_project
    policy = project / ".chalice" / "policy-local-load.json"
    policy.write_text(policy.read_text().replace("dynamodb:BatchWriteItem", "dynamodb:*"))
    stale = deploy_cli(
        *("deploy", "--stage", "local", "--project-dir", str(project)),
        environment={**environment, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
    )
    assert stale.returncode == 1
    assert "policy-local-load.json is missing or stale" in stale.stderr
    unknown = deploy_cli("status", "--stage", "nope", environment=environment)
    assert unknown.returncode == 1
    assert "unknown stage 'nope'" in unknown.stderr
