"""What is deployed: the functions, the schedule rule and the triggers as the endpoint
describes them (`status`, and the end of `deploy`), and `status --check`."""

from __future__ import annotations

import sys
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from infra.deploy.check import check_deployment
from infra.deploy.check import stream_arn as deployed_stream_arn
from infra.deploy.target import SCHEDULED_FUNCTION, endpoint_label, spec_for
from infra.names import WORKER_FUNCTION
from infra.spec import StackSpec
from infra.stages import FUNCTIONS, Stage
from infra.trigger import LOAD_FUNCTION, mappings_of


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


def print_deployment(deployment: dict[str, Any]) -> None:
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
