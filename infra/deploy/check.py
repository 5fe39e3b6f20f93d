"""Does what is deployed match the configuration? The guard `make deploy` ends with.

    python -m infra.deploy status --stage dev --check     # exit 1 and one line per problem

Chalice creates the load function's Kinesis mapping with a batch size and window only, and a
bare `chalice deploy` on a fresh stage (or a console edit) leaves it without the failure
settings: Lambda then ignores the function's `batchItemFailures` and retries whole batches,
never bisects, retries for the stream's whole retention and drops what it gives up on. Nothing
fails visibly. This module reads the deployed mappings back (`ListEventSourceMappings`) and
compares every setting with the values `infra.trigger` applies, and the work queue's own
failure handling (dead-letter queue, visibility timeout) with `infra.provision`'s; each
difference is a `Problem` that names the resource, the setting, both values and what it breaks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from infra.names import WORKER_FUNCTION
from infra.provision import WORK_QUEUE_MAX_RECEIVES, work_queue_visibility_s
from infra.resources import contains
from infra.spec import StackSpec
from infra.stages import FUNCTIONS
from infra.trigger import LOAD_FUNCTION, KinesisEventSourceSettings, mappings_of

WORK_BATCH_SIZE = 1
"""`batch_size` of `@app.on_sqs_message` in app.py: one work item per invocation."""

WHY = {
    "FunctionResponseTypes": "without ReportBatchItemFailures Lambda ignores the function's "
    "batchItemFailures and retries the whole batch",
    "BisectBatchOnFunctionError": "a failing batch is not split to isolate the bad record",
    "MaximumRetryAttempts": "a failing batch is retried more or fewer times than configured",
    "MaximumRecordAgeInSeconds": "records are retried for longer or shorter than configured",
    "DestinationConfig": "a batch Lambda gives up on is not described in the on-failure queue",
    "ParallelizationFactor": "more than one batch per shard at a time breaks the DynamoDB "
    "sink's read-compare-write (newest wins)",
    "BatchSize": "invocations get another number of records than configured",
    "MaximumBatchingWindowInSeconds": "the trigger waits another time to fill a batch",
    "StartingPosition": "the mapping would not read the stream from its oldest record",
    "State": "the mapping does not deliver records",
    "RedrivePolicy": "a work item that keeps failing is not dead-lettered",
    "VisibilityTimeout": "a work item being retried may be handed to two workers at once",
}


@dataclass(frozen=True)
class Problem:
    """One way the deployment differs from the configuration."""

    resource: str
    setting: str
    deployed: Any
    configured: Any

    def __str__(self) -> str:
        why = WHY.get(self.setting)
        return (
            f"{self.resource}: {self.setting} is {self.deployed!r}, configured {self.configured!r}"
            + (f" ({why})" if why else "")
        )


def expected_kinesis_mapping(spec: StackSpec, queue_arn: str) -> dict[str, Any]:
    """Every setting of the load function's Kinesis mapping, as the deploy applies them."""
    mapping = KinesisEventSourceSettings.from_spec(spec, queue_arn)
    return {
        "State": "Enabled",
        "StartingPosition": mapping.starting_position,
        **mapping.as_api_parameters(),
    }


def expected_work_mapping() -> dict[str, Any]:
    return {"State": "Enabled", "BatchSize": WORK_BATCH_SIZE}


def compare(resource: str, deployed: dict[str, Any], wanted: dict[str, Any]) -> list[Problem]:
    return [
        Problem(resource, name, deployed.get(name), value)
        for name, value in wanted.items()
        if not contains(deployed.get(name), value)
    ]


def _queue(name: str) -> dict[str, str] | None:
    sqs = aws.client("sqs")
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
        return None
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def stream_arn(spec: StackSpec) -> str | None:
    """The stage's stream ARN, None when it does not exist (yet)."""
    try:
        summary = aws.client("kinesis").describe_stream_summary(
            StreamName=spec.settings.stream_name
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        return None
    return str(summary["StreamDescriptionSummary"]["StreamARN"])


def _functions(lambda_client: Any, spec: StackSpec) -> list[Problem]:
    problems = []
    for function in FUNCTIONS:
        name = spec.function_name(function)
        try:
            lambda_client.get_function_configuration(FunctionName=name)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            problems.append(Problem(f"function {name}", "existence", "absent", "deployed"))
    return problems


def _one_mapping(
    problems: list[Problem], mappings: list[dict[str, Any]], label: str
) -> dict[str, Any] | None:
    if len(mappings) != 1:
        problems.append(Problem(label, "mappings", len(mappings), 1))
        return None
    return mappings[0]


def check_deployment(spec: StackSpec) -> list[Problem]:
    """Every difference between the deployed triggers and the configuration (empty: all good)."""
    lambda_client = aws.client("lambda")
    problems = _functions(lambda_client, spec)
    stream = stream_arn(spec)
    failure_queue = _queue(spec.failure_queue_name)
    if stream is None:
        problems.append(
            Problem(f"kinesis stream {spec.settings.stream_name}", "existence", "absent", "created")
        )
    if failure_queue is None:
        problems.append(
            Problem(f"sqs queue {spec.failure_queue_name}", "existence", "absent", "created")
        )
    load = spec.function_name(LOAD_FUNCTION)
    if stream is not None and failure_queue is not None:
        label = f"kinesis mapping {spec.settings.stream_name} -> {load}"
        mapping = _one_mapping(problems, mappings_of(lambda_client, load, stream), label)
        if mapping is not None:
            wanted = expected_kinesis_mapping(spec, failure_queue["QueueArn"])
            problems += compare(f"{label} ({mapping['UUID']})", mapping, wanted)
    work_queue = _queue(spec.work_queue_name)
    dead_letter = _queue(spec.work_dead_letter_queue_name)
    worker = spec.function_name(WORKER_FUNCTION)
    if work_queue is None or dead_letter is None:
        for name, queue in (
            (spec.work_queue_name, work_queue),
            (spec.work_dead_letter_queue_name, dead_letter),
        ):
            if queue is None:
                problems.append(Problem(f"sqs queue {name}", "existence", "absent", "created"))
        return problems
    label = f"sqs mapping {spec.work_queue_name} -> {worker}"
    mapping = _one_mapping(
        problems, mappings_of(lambda_client, worker, work_queue["QueueArn"]), label
    )
    if mapping is not None:
        problems += compare(f"{label} ({mapping['UUID']})", mapping, expected_work_mapping())
    redrive = _redrive(work_queue.get("RedrivePolicy"))
    wanted_redrive = {
        "deadLetterTargetArn": dead_letter["QueueArn"],
        "maxReceiveCount": str(WORK_QUEUE_MAX_RECEIVES),
    }
    queue_label = f"sqs queue {spec.work_queue_name}"
    if redrive != wanted_redrive:
        problems.append(Problem(queue_label, "RedrivePolicy", redrive, wanted_redrive))
    visibility = work_queue_visibility_s(spec)
    if work_queue.get("VisibilityTimeout") != str(visibility):
        problems.append(
            Problem(
                queue_label, "VisibilityTimeout", work_queue.get("VisibilityTimeout"), visibility
            )
        )
    return problems


def _redrive(document: str | None) -> dict[str, str] | None:
    if not document:
        return None
    try:
        return {key: str(value) for key, value in json.loads(document).items()}
    except ValueError:
        return {"unparsable": document}
