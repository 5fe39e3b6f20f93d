"""The IAM policies grant each function exactly the AWS calls its code makes.

The pipeline runs in the local cloud with every AWS call recorded (boto3 and PynamoDB) and
attributed to the function that made it: the ingest handler, then the load handler driven by
the event-source mapping (which polls the stream with the load function's role, as Lambda
does), the reconcile handler, and a fanned-out run through the worker. Each call must be
allowed by that function's policy for the `local` stage, and each grant, action by action and
resource by resource, must be used by some call unless it is listed below with the reason it
is not exercised. What the policy documents allow and deny without a run (near misses of every
stage's names, pinned ARNs, each function's boundaries) is tests/unit/test_iam_grants.py.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib import wiring
from chalicelib.aws import clients as aws
from infra.network import ENDPOINT_SERVICES
from infra.stages import FUNCTIONS, Stage
from localcloud.fakeapi import FakeApiServer, FaultInjector
from localcloud.stack import REGION, LocalCloud
from localcloud.triggers.kinesis import KinesisEventSourceMapping
from localcloud.triggers.lambda_runtime import LambdaContext, kinesis_event, scheduled_event
from localcloud.triggers.sqs import SqsEventSourceMapping
from tests.helpers.iam_audit import (
    Call,
    CallRecorder,
    allows,
    endpoints_needed,
    grant_used,
    granted_actions,
    grants,
    local_arn,
    local_policy,
)

NOT_EXERCISED_LOCALLY = {
    # (function, action): why no local run calls it
    ("ingest", "logs:CreateLogGroup"): "Lambda writes the logs, not the code",
    ("ingest", "logs:CreateLogStream"): "Lambda writes the logs, not the code",
    ("ingest", "logs:PutLogEvents"): "Lambda writes the logs, not the code",
    ("load", "logs:CreateLogGroup"): "Lambda writes the logs, not the code",
    ("load", "logs:CreateLogStream"): "Lambda writes the logs, not the code",
    ("load", "logs:PutLogEvents"): "Lambda writes the logs, not the code",
    ("ingest", "cloudwatch:PutMetricData"): "metrics may be flushed as EMF log lines",
    ("load", "cloudwatch:PutMetricData"): "metrics may be flushed as EMF log lines",
    ("load", "kinesis:DescribeStream"): "Lambda's poller describes the stream, not the driver",
    ("load", "kinesis:DescribeStreamSummary"): "Lambda's poller describes the stream",
    ("load", "sqs:SendMessage"): "Lambda sends a batch it gave up on, with the function's role",
    ("reconcile", "logs:CreateLogGroup"): "Lambda writes the logs, not the code",
    ("reconcile", "logs:CreateLogStream"): "Lambda writes the logs, not the code",
    ("reconcile", "logs:PutLogEvents"): "Lambda writes the logs, not the code",
    ("reconcile", "cloudwatch:PutMetricData"): "metrics may be flushed as EMF log lines",
    ("reconcile", "s3:GetObject"): "reads only records quarantined by the load function",
    ("reconcile", "secretsmanager:GetSecretValue"): "read once per process; the load read it",
    ("ingest", "lambda:InvokeFunction"): "only when a run continues past the Lambda timeout, "
    "or the load finished before the ingest (it asks for the verdict then)",
    ("ingest_worker", "lambda:InvokeFunction"): "only when the load finished before the last "
    "work item (the recording drains the stream before the workers run)",
    ("reconcile", "lambda:InvokeFunction"): "only when a reconciliation continues past it",
    ("reconcile", "dynamodb:BatchGetItem"): "only for a page that does not balance",
    ("ingest", "dynamodb:Query"): "only when a delivery resumes a run (test_resume.py)",
    ("ingest_worker", "logs:CreateLogGroup"): "Lambda writes the logs, not the code",
    ("ingest_worker", "logs:CreateLogStream"): "Lambda writes the logs, not the code",
    ("ingest_worker", "logs:PutLogEvents"): "Lambda writes the logs, not the code",
    ("ingest_worker", "cloudwatch:PutMetricData"): "metrics may be flushed as EMF log lines",
}


@pytest.fixture(scope="module")
def recorded_calls(tmp_path_factory: pytest.TempPathFactory) -> list[Call]:
    """Every AWS call of one ingestion (with poisoned items, and repeated ones that the sinks
    skip, so the load writes its evidence) and of draining the stream."""
    state_dir = tmp_path_factory.mktemp("iam")
    faults = FaultInjector({"poison": 0.1, "duplicate-item": 0.1}, seed=2)
    recorder = CallRecorder()
    with (
        FakeApiServer(records=120, seed=5, faults=faults) as api,
        # 10 % poison may exceed the default quality gate; the run must succeed (PutEvents)
        LocalCloud(
            state_dir, api_url=api.url, extra_env={"PIPELINE_MAX_QUARANTINE_RATIO": "0.5"}
        ) as cloud,
        recorder.installed(),
    ):
        import app

        invoked: list[dict[str, Any]] = []
        # Lambda answers an async Invoke with 202 and runs the function later: the recording
        # only needs the call (the reconcile function is called below)
        aws.client("lambda").meta.events.register_first(
            "before-call.lambda.Invoke", lambda params, **_: accept_invoke(params, invoked)
        )
        settings = cloud.settings
        assert cloud.provisioned is not None
        rule_arn = f"arn:aws:events:{REGION}:123456789012:rule/moovitamix-pipeline-local-ingest"
        with recorder.acting_as("ingest"):
            app.ingest(scheduled_event(rule_arn, REGION), LambdaContext("ingest", region=REGION))
        done = threading.Event()
        done.set()
        mapping = KinesisEventSourceMapping(
            kinesis=cloud_kinesis(),
            stream_name=settings.stream_name,
            stream_arn=cloud.provisioned.stream_arn,
            handler=app.load,
            function_name="moovitamix-pipeline-local-load",  # its verdict request names it
            region=REGION,
            batch_size=settings.batch_size,
        )
        with recorder.acting_as("load"):
            mapping.run(done)
            assert [event["detail-type"] for event in invoked] == ["RunLoaded"]
            garbage = {
                "PartitionKey": "users:1",
                "SequenceNumber": "49000000000000000000000000000000000000000000000000000001",
                "Data": b"\x00 not an envelope",
                "ApproximateArrivalTimestamp": datetime.now(UTC),
            }
            app.load(
                kinesis_event(
                    [garbage],
                    shard_id="shardId-000000000000",
                    stream_arn=cloud.provisioned.stream_arn,
                    region=REGION,
                ),
                LambdaContext("load", region=REGION),
            )
        with recorder.acting_as("reconcile"):
            app.reconcile(
                scheduled_event(rule_arn.replace("-ingest", "-reconcile"), REGION),
                LambdaContext("reconcile", region=REGION),
            )
        assert faults.injected["poison"] > 0, "the run must exercise the ingest quarantine"
        # A second run over other data, with every resource fanned out to the workers
        second_faults = FaultInjector({"poison": 0.1}, seed=3)
        with (
            pytest.MonkeyPatch.context() as patch,
            FakeApiServer(records=120, seed=6, faults=second_faults) as second_api,
        ):
            patch.setenv("PIPELINE_API_URL", second_api.url)
            patch.setenv("PIPELINE_PAGE_SIZE", "10")
            patch.setenv("PIPELINE_PAGES_PER_WORKER", "5")
            wiring.reset()
            with recorder.acting_as("ingest"):
                result = app.ingest(
                    scheduled_event(rule_arn, REGION), LambdaContext("ingest", region=REGION)
                )
            assert result["status"] == "fanned_out"
            work = SqsEventSourceMapping(
                sqs=aws.client("sqs"),
                queue_url=cloud.provisioned.work_queue_url,
                handler=app.ingest_worker,
                concurrency=1,
                region=REGION,
            )
            with recorder.acting_as("ingest_worker"):
                work.run(done)
            assert work.progress.invocations == 9  # 12 pages in ranges of 5, per resource
            assert work.progress.failures == 0
            assert second_faults.injected["poison"] > 0
        wiring.reset()
    return recorder.calls


def accept_invoke(params: dict[str, Any], invoked: list[dict[str, Any]]) -> Any:
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    invoked.append(json.loads(params.get("body") or b"{}"))
    return AWSResponse("", 202, HTTPHeaders(), None), {"StatusCode": 202}


def cloud_kinesis() -> Any:
    from chalicelib.aws import clients as aws

    return aws.client("kinesis")


def test_the_recording_saw_both_functions_work(recorded_calls: list[Call]) -> None:
    actions = {(call.function, call.action) for call in recorded_calls}
    for expected in [
        ("ingest", "kinesis:PutRecords"),
        ("ingest", "s3:PutObject"),
        ("load", "kinesis:GetRecords"),
        ("load", "dynamodb:BatchWriteItem"),
        ("load", "s3:PutObject"),
        ("reconcile", "dynamodb:Scan"),
        ("reconcile", "dynamodb:Query"),
        ("reconcile", "events:PutEvents"),
        ("ingest", "sqs:SendMessage"),
        ("ingest", "dynamodb:BatchGetItem"),
        ("ingest_worker", "kinesis:PutRecords"),
        ("ingest_worker", "sqs:ReceiveMessage"),
        ("ingest_worker", "sqs:DeleteMessage"),
        ("ingest_worker", "dynamodb:BatchWriteItem"),
        ("ingest_worker", "s3:PutObject"),
    ]:
        assert expected in actions


def test_every_call_is_allowed_by_its_functions_policy(recorded_calls: list[Call]) -> None:
    denied = sorted(
        {str(call) for call in recorded_calls if not allows(local_policy(call.function), call)}
    )
    assert denied == [], "calls the policies do not allow:\n" + "\n".join(denied)


def test_every_grant_is_used(recorded_calls: list[Call]) -> None:
    used = {(call.function, call.action) for call in recorded_calls}
    unused = sorted(
        f"{function}: {action} (statement {sid})"
        for function in FUNCTIONS
        for sid, action in granted_actions(local_policy(function))
        if (function, action) not in used and (function, action) not in NOT_EXERCISED_LOCALLY
    )
    assert unused == [], "grants no call uses (remove them, or say why):\n" + "\n".join(unused)


def test_no_grant_is_listed_as_not_exercised_while_a_call_uses_it(
    recorded_calls: list[Call],
) -> None:
    used = {(call.function, call.action) for call in recorded_calls}
    assert sorted(set(NOT_EXERCISED_LOCALLY) & used) == []


def test_every_grant_is_used_on_every_resource_it_names(recorded_calls: list[Call]) -> None:
    """Not only the action: each resource of a grant must be one the function touched."""
    unused = sorted(
        f"{function}: {action} on {resource} (statement {sid})"
        for function in FUNCTIONS
        for sid, action, resource, condition in grants(local_policy(function))
        if (function, action) not in NOT_EXERCISED_LOCALLY
        and not grant_used(
            action, resource, condition, [c for c in recorded_calls if c.function == function]
        )
    )
    assert unused == [], "resources no call touches (remove them, or say why):\n" + "\n".join(
        unused
    )


def test_no_function_may_touch_another_stage(recorded_calls: list[Call]) -> None:
    for call in recorded_calls:
        other_stage = Call(
            call.function,
            call.action,
            tuple(
                resource.replace("moovitamix-local", "moovitamix-dev")
                for resource in call.resources
            ),
            call.context,
        )
        if other_stage.resources != call.resources:
            assert not allows(local_policy(call.function), other_stage), str(other_stage)


def test_every_service_the_vpc_functions_call_has_a_default_vpc_endpoint(
    recorded_calls: list[Call],
) -> None:
    """In the VPC without a NAT a call to a service with no endpoint hangs until it times out:
    the default `vpc_endpoints.services` must serve every call load and reconcile made."""
    dev = Stage.load("dev")
    in_vpc = {name for name in FUNCTIONS if dev.function_setting(name, "subnet_ids", [])}
    assert in_vpc == {"load", "reconcile"}
    called = {call.action for call in recorded_calls if call.function in in_vpc}
    needed = endpoints_needed(called)
    assert "lambda" in needed  # the load asked for the run's verdict
    assert set(needed) <= set(ENDPOINT_SERVICES), needed


@pytest.mark.usefixtures("aws_env")
def test_the_recorder_names_sqs_batch_calls_by_the_action_iam_checks() -> None:
    """SendMessageBatch is authorised as sqs:SendMessage (and so recorded), as IAM does."""
    import uuid

    import boto3

    sqs = boto3.client("sqs")
    name = f"t{uuid.uuid4().hex[:10]}-ingest-work"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    recorder = CallRecorder()
    try:
        with recorder.installed(), recorder.acting_as("ingest"):
            sqs.send_message_batch(QueueUrl=queue_url, Entries=[{"Id": "0", "MessageBody": "{}"}])
    finally:
        sqs.delete_queue(QueueUrl=queue_url)
    (call,) = recorder.calls
    assert call.action == "sqs:SendMessage"
    assert call.resources == (local_arn("sqs", name),)
