"""The infrastructure definition: applied by script (create-or-update), rendered to CFN."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.settings import Settings
from infra import provision as provisioning
from infra.cloudformation import infra_template, sam_merge_template
from infra.monitoring import cloudformation_resources
from infra.postgres_secret import ensure_postgres_secret
from infra.provision import (
    ALARM_TOPIC,
    FAILURE_QUEUE,
    STREAM,
    WORK_DEAD_LETTER_QUEUE,
    WORK_QUEUE,
    apply_stack,
    destroy_stack,
    provision,
    stack_resources,
)
from infra.resources import Attr, Change, Topic
from infra.spec import StackSpec
from infra.stages import Stage
from infra.trigger import KinesisEventSourceSettings, apply_failure_settings


@pytest.fixture
def spec(aws_env: str) -> StackSpec:
    """A stack with names no other test uses, on the session's moto server."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        table_prefix=prefix,
        stream_name=f"{prefix}-events",
        quarantine_bucket=f"{prefix}-quarantine",
        work_queue=f"{prefix}-ingest-work",
    )
    # moto speaks plain HTTP and enforces bucket policies: no TLS-only policy here (tested below)
    return StackSpec(settings, stage="test", shard_count=1, tls_only=False)


def _stream_exists(name: str) -> bool:
    """Asked by name: ListStreams pages through a shared server's many streams unreliably."""
    try:
        client("kinesis").describe_stream_summary(StreamName=name)
    except client("kinesis").exceptions.ResourceNotFoundException:
        return False
    return True


def client(service: str) -> Any:
    return boto3.client(service)


def actions(changes: list[Change]) -> set[str]:
    return {change.action for change in changes}


def test_apply_creates_everything_then_changes_nothing(spec: StackSpec) -> None:
    first = apply_stack(spec)
    assert actions(first.changes) == {"created"}
    assert [change.resource for change in first.changes] == [
        resource.label for resource in stack_resources(spec)
    ]
    second = apply_stack(spec)
    assert actions(second.changes) == {"unchanged"}
    assert second.changed == []
    assert second.attributes == first.attributes


def test_apply_repairs_drift_and_says_what_it_changed(spec: StackSpec) -> None:
    applied = apply_stack(spec)
    settings = spec.settings
    client("s3").delete_public_access_block(Bucket=settings.quarantine_bucket)
    client("sqs").set_queue_attributes(
        QueueUrl=applied.attributes[FAILURE_QUEUE]["QueueUrl"],
        Attributes={"MessageRetentionPeriod": "60"},
    )
    client("dynamodb").update_continuous_backups(
        TableName=settings.table_name("runs"),
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False},
    )
    client("kinesis").stop_stream_encryption(
        StreamName=settings.stream_name, EncryptionType="KMS", KeyId="alias/aws/kinesis"
    )
    client("sqs").set_queue_attributes(
        QueueUrl=applied.attributes[WORK_QUEUE]["QueueUrl"],
        Attributes={"VisibilityTimeout": "30"},
    )
    changed = {change.resource: change.details for change in apply_stack(spec).changed}
    assert changed == {
        f"kinesis stream {settings.stream_name}": ["encryption at rest enabled"],
        f"dynamodb table {settings.table_name('runs')}": ["point-in-time recovery enabled"],
        f"s3 bucket {settings.quarantine_bucket}": ["public access blocked"],
        f"sqs queue {spec.failure_queue_name}": ["MessageRetentionPeriod=1209600"],
        f"sqs queue {spec.work_queue_name}": ["VisibilityTimeout=5400"],
    }
    assert apply_stack(spec).changed == []


def queue_attributes(url: str) -> dict[str, str]:
    return dict(
        client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    )


def test_the_work_queue_hands_a_failing_item_to_its_dead_letter_queue(spec: StackSpec) -> None:
    applied = apply_stack(spec).attributes
    work = queue_attributes(applied[WORK_QUEUE]["QueueUrl"])
    dead = queue_attributes(applied[WORK_DEAD_LETTER_QUEUE]["QueueUrl"])
    assert int(work["VisibilityTimeout"]) == 6 * spec.worker_timeout_s == 5400
    assert json.loads(work["RedrivePolicy"]) == {
        "deadLetterTargetArn": applied[WORK_DEAD_LETTER_QUEUE]["Arn"],
        "maxReceiveCount": 3,
    }
    assert work["SqsManagedSseEnabled"] == dead["SqsManagedSseEnabled"] == "true"
    assert int(dead["MessageRetentionPeriod"]) == 14 * 86400
    assert int(work["MessageRetentionPeriod"]) < int(dead["MessageRetentionPeriod"])
    assert applied[WORK_DEAD_LETTER_QUEUE]["Arn"].endswith(f":{spec.settings.work_queue}-dlq")
    # three receives without a delete (a worker that keeps failing): the item is dead-lettered
    sqs = client("sqs")
    work_url = applied[WORK_QUEUE]["QueueUrl"]
    sqs.send_message(QueueUrl=work_url, MessageBody='{"run_id": "r", "resource": "users"}')
    for _ in range(3):
        (message,) = sqs.receive_message(QueueUrl=work_url, VisibilityTimeout=0)["Messages"]
    assert sqs.receive_message(QueueUrl=work_url, VisibilityTimeout=0).get("Messages", []) == []
    (dead_lettered,) = sqs.receive_message(QueueUrl=applied[WORK_DEAD_LETTER_QUEUE]["QueueUrl"])[
        "Messages"
    ]
    assert dead_lettered["Body"] == message["Body"]


def test_a_worker_timeout_sqs_cannot_cover_is_refused(spec: StackSpec) -> None:
    too_long = StackSpec(spec.settings, stage=spec.stage, worker_timeout_s=7201)
    with pytest.raises(ValueError, match="at most 43200 s"):
        stack_resources(too_long)


def test_apply_grows_the_stream_to_the_wanted_shard_count(spec: StackSpec) -> None:
    apply_stack(spec)
    bigger = StackSpec(spec.settings, stage=spec.stage, shard_count=2, tls_only=False)
    (change,) = apply_stack(bigger).changed
    assert change.details == ["shards 1 -> 2"]
    summary = client("kinesis").describe_stream_summary(StreamName=spec.settings.stream_name)
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2


def test_a_table_whose_keys_differ_is_an_error_not_a_silent_change(spec: StackSpec) -> None:
    client("dynamodb").create_table(
        TableName=spec.settings.table_name("users"),
        AttributeDefinitions=[{"AttributeName": "email", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "email", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(ValueError, match="keys cannot change in place"):
        apply_stack(spec)


def test_the_secret_keeps_its_value_and_never_holds_a_fixed_password(spec: StackSpec) -> None:
    apply_stack(spec)
    secrets = client("secretsmanager")
    first = json.loads(secrets.get_secret_value(SecretId=spec.postgres_secret_name)["SecretString"])
    assert first["username"] == "moovitamix"
    assert len(first["password"]) >= 32
    secrets.put_secret_value(SecretId=spec.postgres_secret_name, SecretString='{"set": "by ops"}')
    apply_stack(spec)
    kept = secrets.get_secret_value(SecretId=spec.postgres_secret_name)["SecretString"]
    assert json.loads(kept) == {"set": "by ops"}


def test_a_secret_written_before_the_deploy_is_used_and_outlives_destroy(spec: StackSpec) -> None:
    """The LocalStack init hook writes the database's real password before any deploy."""
    credentials = Credentials("postgres", 5432, "moovitamix", "the-real-one", "moovitamix")
    ensure_postgres_secret(spec.postgres_secret_name, credentials)
    secrets = client("secretsmanager")

    def stored() -> Credentials:
        value = secrets.get_secret_value(SecretId=spec.postgres_secret_name)["SecretString"]
        return Credentials.from_secret(value)

    applied = {change.resource: change for change in apply_stack(spec).changes}
    assert str(applied[f"secret {spec.postgres_secret_name}"]).startswith("updated")  # description
    assert stored() == credentials
    removed = {change.resource: change for change in destroy_stack(spec).changes}
    kept = removed.pop(f"secret {spec.postgres_secret_name}")
    assert kept.action == "kept"
    assert "delete-secret" in str(kept)
    assert actions(list(removed.values())) == {"deleted"}
    assert stored() == credentials
    again = {change.resource: change.action for change in apply_stack(spec).changes}
    assert again[f"secret {spec.postgres_secret_name}"] == "unchanged"
    assert stored() == credentials


def test_destroy_deletes_everything_even_a_bucket_with_records(spec: StackSpec) -> None:
    apply_stack(spec)
    client("s3").put_object(
        Bucket=spec.settings.quarantine_bucket, Key="run/users/1.json", Body=b"{}"
    )
    removed = destroy_stack(spec)
    assert actions(removed.changes) == {"deleted"}
    assert [change.resource for change in removed.changes] == [
        resource.label for resource in reversed(stack_resources(spec))
    ]
    assert actions(destroy_stack(spec).changes) == {"absent"}
    assert not _stream_exists(spec.settings.stream_name)


def test_provision_keeps_serving_the_local_cloud(spec: StackSpec) -> None:
    provisioned = provision(spec.settings, shard_count=1)
    assert provisioned.stream_arn.endswith(f":stream/{spec.settings.stream_name}")
    assert provisioned.tables["runs"] == spec.settings.table_name("runs")
    assert provisioned.bucket == spec.settings.quarantine_bucket
    assert provisioned.failure_queue_arn.endswith(f":{spec.failure_queue_name}")
    assert provisioned.failure_queue_url.endswith(f"/{spec.failure_queue_name}")
    assert provisioned.work_queue_url.endswith(f"/{spec.settings.work_queue}")
    assert provisioned.work_queue_arn.endswith(f":{spec.settings.work_queue}")
    assert provisioned.work_dead_letter_queue_url.endswith(f"/{spec.settings.work_queue}-dlq")
    assert provisioned.work_dead_letter_queue_arn.endswith(f":{spec.settings.work_queue}-dlq")
    assert ":secret:" in provisioned.postgres_secret_arn
    assert provisioned.alarm_topic_arn.endswith(f":{spec.alarm_topic_name}")
    assert f"kinesis stream {spec.settings.stream_name} (1 shards)" in provisioned.created
    assert provision(spec.settings, shard_count=1).created == []


@pytest.fixture
def extra_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the monitoring issue does: add a builder whose resources reference core ones."""

    def alarms(spec: StackSpec) -> list[Any]:
        return [Topic("ExtraTopic", f"{spec.prefix}-extra")]

    monkeypatch.setattr(provisioning, "BUILDERS", [*provisioning.BUILDERS, alarms])


@pytest.mark.usefixtures("extra_builder")
def test_an_added_builder_is_applied_destroyed_and_rendered(spec: StackSpec) -> None:
    created = [change.resource for change in apply_stack(spec).changes]
    assert created[-1] == f"sns topic {spec.prefix}-extra"
    assert "ExtraTopic" in infra_template(spec)["Resources"]
    assert destroy_stack(spec).changes[0].resource == f"sns topic {spec.prefix}-extra"


def test_duplicate_logical_ids_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = StackSpec(Settings())
    monkeypatch.setattr(
        provisioning,
        "BUILDERS",
        [*provisioning.BUILDERS, lambda spec: [Topic(ALARM_TOPIC, "another")]],
    )
    with pytest.raises(ValueError, match="duplicate logical ids"):
        stack_resources(spec)


def test_an_attribute_reference_needs_its_resource_applied_first() -> None:
    from infra.resources import ApplyContext

    with pytest.raises(KeyError, match="apply Missing before"):
        ApplyContext().resolve({"Targets": [Attr("Missing", "Arn")]})
    assert Attr("AlarmTopic", "Ref").cloudformation() == {"Ref": "AlarmTopic"}


@pytest.mark.parametrize("stage_name", ["dev", "localstack", "local"])
def test_the_cloudformation_template_is_lint_clean_and_matches_the_script(stage_name: str) -> None:
    stage = Stage.load(stage_name)
    spec = StackSpec(stage.settings, stage=stage.name)
    template = infra_template(spec)
    matches = lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))
    assert [str(match) for match in matches] == []
    resources = template["Resources"]
    monitoring = [
        name
        for name in cloudformation_resources(stage.settings, stage.name)
        if name != "AlarmTopic"  # one topic, already a stack resource
    ]
    assert (
        list(resources)
        == [name for r in stack_resources(spec) for name in r.cloudformation()] + monitoring
    )
    assert len(monitoring) > 10  # every alarm and the dashboard
    assert resources[STREAM]["Properties"]["Name"] == stage.settings.stream_name
    assert resources[STREAM]["Properties"]["ShardCount"] == stage.settings.stream_shards
    assert (
        resources["QuarantineBucket"]["Properties"]["BucketName"]
        == stage.settings.quarantine_bucket
    )
    assert resources[FAILURE_QUEUE]["Properties"]["QueueName"] == spec.failure_queue_name
    work_queue = resources[WORK_QUEUE]["Properties"]
    assert work_queue["QueueName"] == stage.environment["PIPELINE_WORK_QUEUE"]
    assert work_queue["QueueName"] == f"{stage.settings.table_prefix}-ingest-work"
    assert work_queue["VisibilityTimeout"] == 6 * stage.function_setting(
        "ingest_worker", "lambda_timeout"
    )
    assert work_queue["SqsManagedSseEnabled"] is True
    assert work_queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [WORK_DEAD_LETTER_QUEUE, "Arn"]},
        "maxReceiveCount": 3,
    }
    dead_letter = resources[WORK_DEAD_LETTER_QUEUE]["Properties"]
    assert dead_letter["QueueName"] == f"{work_queue['QueueName']}-dlq"
    assert dead_letter["MessageRetentionPeriod"] == 14 * 86400
    assert list(resources).index(WORK_DEAD_LETTER_QUEUE) < list(resources).index(WORK_QUEUE)
    assert "SecretString" not in resources["PostgresSecret"]["Properties"]
    merge = sam_merge_template(spec)
    assert merge["Resources"]["Load"]["DependsOn"] == [STREAM]
    assert merge["Resources"]["IngestWorker"]["DependsOn"] == [WORK_QUEUE]
    event = merge["Resources"]["Load"]["Properties"]["Events"]["LoadKinesisEventSource"]
    assert event["Properties"]["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": [FAILURE_QUEUE, "Arn"]}}
    }


def test_the_trigger_settings_are_applied_once(spec: StackSpec) -> None:
    applied = apply_stack(spec)
    stream_arn = applied.attributes[STREAM]["Arn"]
    queue_arn = applied.attributes[FAILURE_QUEUE]["Arn"]
    aws_lambda, iam = client("lambda"), client("iam")
    role = iam.create_role(
        RoleName=f"{spec.prefix}-load",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    aws_lambda.create_function(
        FunctionName=spec.function_name("load"),
        Runtime="python3.11",
        Role=role,
        Handler="app.load",
        Code={"ZipFile": _empty_zip()},
    )
    with pytest.raises(RuntimeError, match="found 0"):
        apply_failure_settings(aws_lambda, spec, stream_arn, queue_arn)
    aws_lambda.create_event_source_mapping(
        EventSourceArn=stream_arn,
        FunctionName=spec.function_name("load"),
        StartingPosition="TRIM_HORIZON",
        BatchSize=100,
    )
    first = apply_failure_settings(aws_lambda, spec, stream_arn, queue_arn)
    assert first.action == "updated"
    # the five failure settings, and the parallelization factor moto leaves unset
    assert len(first.details) == 6
    assert any(detail.startswith("ParallelizationFactor: None -> 1") for detail in first.details)
    assert apply_failure_settings(aws_lambda, spec, stream_arn, queue_arn).action == "unchanged"


def _empty_zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def load(event, context):\n    return {}\n")
    return buffer.getvalue()


@given(age=st.integers(min_value=-10, max_value=700_000))
def test_record_age_is_one_lambda_accepts(age: int) -> None:
    settings = Settings(trigger_max_record_age_s=age) if -1 <= age <= 604_800 else None
    if settings is None:
        with pytest.raises(ValueError, match="trigger_max_record_age_s"):
            Settings(trigger_max_record_age_s=age)
        return
    spec = StackSpec(settings)
    if age == -1 or 60 <= age <= 604_800:
        assert KinesisEventSourceSettings.from_spec(spec).maximum_record_age_in_seconds == age
    else:
        with pytest.raises(ValueError, match=r"-1 or 60\.\.604800"):
            KinesisEventSourceSettings.from_spec(spec)


def test_stage_settings_come_from_the_config_not_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STREAM_NAME", "from-the-shell")
    stage = Stage.load("dev")
    assert stage.settings.stream_name == "moovitamix-dev-events"
    assert stage.function_name("load") == "moovitamix-pipeline-dev-load"
    assert stage.function_setting("ingest", "reserved_concurrency") == 1
    assert stage.function_setting("load", "log_retention_in_days") == 30
    assert stage.function_setting("load", "no_such_setting", "default") == "default"
    with pytest.raises(ValueError, match="unknown stage"):
        Stage.load("prod")


def test_chalice_sees_the_stage_settings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.deploy.chalice_runner import chalice_environment

    monkeypatch.setenv("PIPELINE_SINKS", "from-the-shell")
    monkeypatch.setenv("PIPELINE_NOT_A_SETTING", "x")
    environment = chalice_environment(Stage.load("localstack"))
    assert environment["PIPELINE_SINKS"] == "dynamodb,postgres"
    assert environment["PIPELINE_SCHEDULE"] == "rate(10 minutes)"
    assert "PIPELINE_NOT_A_SETTING" not in environment
    assert "POWERTOOLS_SERVICE_NAME" not in environment


def test_the_localstack_compose_file_runs_every_service_the_deploy_uses(spec: StackSpec) -> None:
    import yaml

    from infra.stages import PROJECT_ROOT
    from tests.helpers.iam_audit import CallRecorder

    recorder = CallRecorder()
    with recorder.installed(), recorder.acting_as("deploy"):
        apply_stack(spec)
        destroy_stack(spec)
    infrastructure = {call.action.split(":")[0] for call in recorder.calls}
    chalice = {"lambda", "iam", "events", "logs", "sts"}  # roles, functions, rule, log groups
    metrics = {"cloudwatch"}
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.localstack.yml").read_text())
    localstack = compose["services"]["localstack"]
    assert localstack["image"] == "localstack/localstack:4.14.0"
    services = set(localstack["environment"]["SERVICES"].split(","))
    assert infrastructure | chalice | metrics <= services
    assert "/var/run/docker.sock:/var/run/docker.sock" in localstack["volumes"]
    assert "127.0.0.1:4566:4566" in localstack["ports"]
    assert "_localstack/health" in " ".join(localstack["healthcheck"]["test"])
    api_url = Stage.load("localstack").environment["PIPELINE_API_URL"]
    assert api_url.startswith("http://host.docker.internal:")
    assert "host.docker.internal:host-gateway" in localstack["environment"]["LAMBDA_DOCKER_FLAGS"]


# --------------------------------------------------------------------------------------------
# retention: the quarantine bucket (personal data) and production stages
# --------------------------------------------------------------------------------------------


def test_quarantined_records_expire_and_the_bucket_refuses_plain_http(spec: StackSpec) -> None:
    from botocore.exceptions import ClientError

    from infra.resources.s3 import tls_only_policy

    strict = StackSpec(spec.settings, stage=spec.stage, shard_count=1, tls_only=True)
    apply_stack(strict)
    s3 = client("s3")
    bucket = spec.settings.quarantine_bucket
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Expiration"] == {"Days": 30}  # the default of PIPELINE_QUARANTINE_RETENTION_DAYS
    assert rule["Filter"] == {"Prefix": ""}  # every object
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy == tls_only_policy(f"arn:aws:s3:::{bucket}")
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # moto is reached over plain HTTP here, and enforces the policy as S3 does
    assert client("s3").meta.endpoint_url.startswith("http://")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="run/users/p1.json", Body=b"{}")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert apply_stack(strict).changed == []
    # a shorter retention is applied in place; a removed policy is put back
    shorter = StackSpec(
        spec.settings.model_copy(update={"quarantine_retention_days": 7}),
        stage=spec.stage,
        shard_count=1,
        tls_only=True,
    )
    s3.delete_bucket_policy(Bucket=bucket)
    (change,) = apply_stack(shorter).changed
    assert change.details == ["objects expire after 7 days", "TLS-only bucket policy"]
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["Expiration"] == {"Days": 7}
    # back to the plain-HTTP spec: the policy goes, so the emulator can be used again
    (change,) = apply_stack(spec).changed
    assert change.details == ["objects expire after 30 days", "bucket policy removed"]
    s3.put_object(Bucket=bucket, Key="run/users/p1.json", Body=b"{}")


def test_the_retention_is_a_setting_with_a_sane_range() -> None:
    assert Settings().quarantine_retention_days == 30
    for days in (0, 3651):
        with pytest.raises(ValueError, match="quarantine_retention_days"):
            Settings(quarantine_retention_days=days)


DATA_STORES = {STREAM, "QuarantineBucket", "QuarantineBucketPolicy"} | {
    f"{name}Table" for name in ("Users", "Tracks", "ListenHistory", "Runs", "RunPages")
}


@pytest.mark.parametrize("production", [True, False])
def test_a_production_stage_template_retains_the_data(production: bool) -> None:
    stage = Stage.load("dev")
    spec = StackSpec(stage.settings, stage=stage.name, production=production)
    template = infra_template(spec)
    assert lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"])) == []
    resources = template["Resources"]
    assert set(resources) >= DATA_STORES
    for logical_id, definition in resources.items():
        if "DeletionPolicy" not in definition:
            continue
        kept = logical_id in DATA_STORES and production
        expected = "Retain" if kept else "Delete"
        assert definition["DeletionPolicy"] == expected, logical_id
        assert definition["UpdateReplacePolicy"] == expected, logical_id
    bucket = resources["QuarantineBucket"]["Properties"]
    assert bucket["LifecycleConfiguration"]["Rules"] == [
        {
            "Id": "expire-quarantined-records",
            "Status": "Enabled",
            "ExpirationInDays": 30,
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]
    policy = resources["QuarantineBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "QuarantineBucket"}
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [
        f"arn:aws:s3:::{stage.settings.quarantine_bucket}",
        f"arn:aws:s3:::{stage.settings.quarantine_bucket}/*",
    ]


def test_destroying_a_production_stage_keeps_its_data(spec: StackSpec) -> None:
    production = StackSpec(
        spec.settings, stage=spec.stage, shard_count=1, tls_only=False, production=True
    )
    apply_stack(production)
    client("s3").put_object(
        Bucket=spec.settings.quarantine_bucket, Key="run/users/p1.json", Body=b"{}"
    )
    removed = {change.resource: change.action for change in destroy_stack(production).changes}
    settings = spec.settings
    kept = [
        f"kinesis stream {settings.stream_name}",
        f"s3 bucket {settings.quarantine_bucket}",
        *(f"dynamodb table {settings.table_name(suffix)}" for suffix in provisioning.TABLE_KEYS),
    ]
    assert {removed[label] for label in kept} == {"retained"}
    assert {action for label, action in removed.items() if label not in kept} == {"deleted"}
    assert client("s3").list_objects_v2(Bucket=settings.quarantine_bucket)["KeyCount"] == 1
    assert _stream_exists(settings.stream_name)
    assert destroy_stack(production).changed == []
    # the same stage marked non-production is removed entirely
    assert {change.action for change in destroy_stack(spec).changes} >= {"deleted", "absent"}
    assert not _stream_exists(settings.stream_name)


def test_production_is_a_stage_setting_that_defaults_to_keeping_data(tmp_path: Any) -> None:
    assert Stage.load("dev").production is False
    assert Stage.load("local").production is False
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    from infra.chalice_config import read_config, write_config

    config = read_config()
    prod = json.loads(json.dumps(config["stages"]["dev"]))
    del prod["infra"]["production"]
    config["stages"]["prod"] = prod
    config["stages"]["local"]["infra"]["production"] = True  # an emulator stage never is
    config["stages"]["bad"] = {**prod, "infra": {**prod["infra"], "production": "yes"}}
    write_config(config, project)
    assert Stage.load("prod", project).production is True
    assert Stage.load("local", project).production is False
    with pytest.raises(ValueError, match="production must be true or false"):
        _ = Stage.load("bad", project).production
    from infra.deploy import spec_for

    assert spec_for(Stage.load("prod", project)).production is True
    assert spec_for(Stage.load("prod", project)).tls_only is True
    assert spec_for(Stage.load("local", project)).tls_only is False
