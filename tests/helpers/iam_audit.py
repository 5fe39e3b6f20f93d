"""Record every AWS call a process makes and check it against IAM policy documents.

`CallRecorder` wraps botocore's `BaseClient._make_api_call`, which every client goes through
(boto3's and PynamoDB's own botocore client alike), and turns each call into what IAM
authorises: an action (`dynamodb:BatchWriteItem`), the resource ARNs it touches and the
condition keys it sets (`cloudwatch:namespace`). `allows` evaluates a policy the way IAM does
for the parts our policies use: Allow/Deny, `*`/`?` wildcards, StringEquals/StringLike/Bool.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from botocore.client import BaseClient

from infra.stages import PROJECT_ROOT

ACCOUNT = "123456789012"  # moto's account

# Operations whose IAM action is not named after the operation.
_ACTION_NAMES = {
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjects"): "ListBucket",
    ("s3", "HeadBucket"): "ListBucket",
    ("s3", "HeadObject"): "GetObject",
    ("s3", "ListObjectVersions"): "ListBucketVersions",
    # SQS authorises its batch operations with the single-message action
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    # the Invoke API is authorised as lambda:InvokeFunction
    ("lambda", "Invoke"): "InvokeFunction",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
}

# The VPC endpoint service (`com.amazonaws.<region>.<name>`) that serves each IAM service, and
# the IAM services whose actions the Lambda service performs for a function, not its code
# (it writes the logs and attaches the network interfaces): no endpoint needed for those.
ENDPOINT_OF_IAM_SERVICE = {
    "dynamodb": "dynamodb",
    "s3": "s3",
    "kinesis": "kinesis-streams",
    "sqs": "sqs",
    "secretsmanager": "secretsmanager",
    "cloudwatch": "monitoring",
    "events": "events",
    "lambda": "lambda",
}
DONE_BY_THE_LAMBDA_SERVICE = frozenset({"logs", "ec2"})


def endpoints_needed(actions: Iterator[str] | list[str] | set[str]) -> dict[str, set[str]]:
    """For IAM actions a function in a VPC performs: endpoint service -> the actions needing it.

    An IAM service with no known endpoint maps to itself prefixed `unknown:`, so a new service
    shows up in the comparison rather than being dropped.
    """
    needed: dict[str, set[str]] = {}
    for action in actions:
        service = action.split(":", 1)[0]
        if service in DONE_BY_THE_LAMBDA_SERVICE:
            continue
        endpoint = ENDPOINT_OF_IAM_SERVICE.get(service, f"unknown:{service}")
        needed.setdefault(endpoint, set()).add(action)
    return needed


@dataclass(frozen=True)
class Call:
    function: str
    action: str
    resources: tuple[str, ...]
    context: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        condition = f" {dict(self.context)}" if self.context else ""
        return f"{self.function}: {self.action} on {', '.join(self.resources)}{condition}"


@dataclass
class CallRecorder:
    """Attributes each AWS call to `function` (None: not recorded) while installed."""

    function: str | None = None
    calls: list[Call] = field(default_factory=list)
    _stream_of_iterator: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def installed(self) -> Iterator[CallRecorder]:
        original = BaseClient._make_api_call
        recorder = self

        def recording(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            response = None
            try:
                response = original(client, operation, params)
                return response
            finally:
                recorder._record(client, operation, params, response)

        BaseClient._make_api_call = recording  # type: ignore[method-assign]
        try:
            yield self
        finally:
            BaseClient._make_api_call = original  # type: ignore[method-assign]

    @contextmanager
    def acting_as(self, function: str) -> Iterator[None]:
        self.function = function
        try:
            yield
        finally:
            self.function = None

    def _record(
        self, client: BaseClient, operation: str, params: dict[str, Any], response: Any
    ) -> None:
        service = client.meta.service_model.service_name
        region = client.meta.region_name
        with self._lock:
            self._track_iterators(service, params, response)
            if self.function is None:
                return
            action = f"{service}:{_ACTION_NAMES.get((service, operation), operation)}"
            resources, context = self._resources(service, region, operation, params, response)
            self.calls.append(Call(self.function, action, tuple(resources), tuple(context.items())))

    def _track_iterators(self, service: str, params: dict[str, Any], response: Any) -> None:
        """GetRecords names no stream, only an iterator; remember which stream issued it."""
        if service != "kinesis" or not isinstance(response, dict):
            return
        stream = params.get("StreamName") or params.get("StreamARN", "").rsplit("/", 1)[-1]
        if "ShardIterator" in params:
            stream = self._stream_of_iterator.get(params["ShardIterator"], stream)
        for key in ("ShardIterator", "NextShardIterator"):
            if response.get(key) and stream:
                self._stream_of_iterator[response[key]] = stream

    def _resources(
        self, service: str, region: str, operation: str, params: dict[str, Any], response: Any
    ) -> tuple[list[str], dict[str, str]]:
        def arn(resource: str) -> str:
            return f"arn:aws:{service}:{region}:{ACCOUNT}:{resource}"

        if service == "kinesis":
            if params.get("StreamARN"):
                return [params["StreamARN"]], {}
            name = params.get("StreamName") or self._stream_of_iterator.get(
                params.get("ShardIterator", ""), "<unknown stream>"
            )
            return [arn(f"stream/{name}")], {}
        if service == "dynamodb":
            if "RequestItems" in params:
                return [arn(f"table/{name}") for name in params["RequestItems"]], {}
            if "TransactItems" in params:
                return [
                    arn(f"table/{next(iter(item.values()))['TableName']}")
                    for item in params["TransactItems"]
                ], {}
            table = f"table/{params.get('TableName', '*')}"
            if params.get("IndexName"):  # a Query of an index is authorized on the index
                return [arn(f"{table}/index/{params['IndexName']}")], {}
            context: dict[str, str] = {}
            hash_key = next(iter(params.get("Key", {}).values()), None)
            if isinstance(hash_key, dict) and "S" in hash_key:  # dynamodb:LeadingKeys
                context["dynamodb:LeadingKeys"] = hash_key["S"]
            return [arn(table)], context
        if service == "s3":
            bucket = params.get("Bucket", "")
            key = params.get("Key")
            return [f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"], {}
        if service == "sqs":
            name = params.get("QueueName") or urlparse(params["QueueUrl"]).path.rsplit("/", 1)[-1]
            return [arn(name)], {}
        if service == "secretsmanager":
            secret = str(params.get("SecretId") or params["Name"])
            if secret.startswith("arn:"):
                return [secret], {}
            if isinstance(response, dict) and response.get("ARN"):
                return [response["ARN"]], {}
            return [arn(f"secret:{secret}-AbCdEf")], {}
        if service == "cloudwatch" and operation == "PutMetricData":
            return ["*"], {"cloudwatch:namespace": params["Namespace"]}
        if service == "events" and operation == "PutEvents":
            buses = {entry.get("EventBusName", "default") for entry in params["Entries"]}
            return [
                bus if bus.startswith("arn:") else arn(f"event-bus/{bus}") for bus in sorted(buses)
            ], {}
        if service == "lambda" and "FunctionName" in params:
            name = str(params["FunctionName"])
            return [name if name.startswith("arn:") else arn(f"function:{name}")], {}
        if service == "logs" and "logGroupName" in params:
            return [arn(f"log-group:{params['logGroupName']}")], {}
        return [f"<no resource mapping for {service}:{operation}; add one>"], {}


def _matches(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return re.fullmatch(fnmatch.translate(pattern), value) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _conditions_hold(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for qualified, tests in condition.items():
        # ForAllValues: every value of a multi-valued key must match (one value per call here)
        operator = qualified.removeprefix("ForAllValues:")
        for key, expected in tests.items():
            actual = context.get(key)
            if actual is None:
                return False
            values = [str(item) for item in _as_list(expected)]
            if operator == "StringEquals" and actual not in values:
                return False
            if operator == "StringLike" and not any(
                _matches(value, actual, case_sensitive=True) for value in values
            ):
                return False
            if operator == "Bool" and actual.lower() not in [value.lower() for value in values]:
                return False
            if operator not in ("StringEquals", "StringLike", "Bool"):
                raise NotImplementedError(f"condition operator {operator}")
    return True


def statement_matches(statement: dict[str, Any], call: Call, resource: str) -> bool:
    actions = _as_list(statement.get("Action", []))
    if not any(_matches(pattern, call.action, case_sensitive=False) for pattern in actions):
        return False
    resources = _as_list(statement.get("Resource", []))
    if not any(_matches(pattern, resource, case_sensitive=True) for pattern in resources):
        return False
    return _conditions_hold(statement.get("Condition", {}), dict(call.context))


def allows(policy: dict[str, Any], call: Call) -> bool:
    """True when the policy allows the call on every resource it touches, as IAM decides."""
    for resource in call.resources:
        statements = policy["Statement"]
        if any(
            statement["Effect"] == "Deny" and statement_matches(statement, call, resource)
            for statement in statements
        ):
            return False
        if not any(
            statement["Effect"] == "Allow" and statement_matches(statement, call, resource)
            for statement in statements
        ):
            return False
    return True


def granted_actions(policy: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (statement id, action) a policy grants."""
    return {
        (statement.get("Sid", ""), action)
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"])
    }


def grants(policy: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Every (statement id, action, resource pattern, condition) a policy allows."""
    return [
        (statement.get("Sid", ""), action, resource, statement.get("Condition", {}))
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"])
        for resource in _as_list(statement["Resource"])
    ]


def grant_used(action: str, pattern: str, condition: dict[str, Any], calls: list[Call]) -> bool:
    """True when some call is authorised by exactly this (action, resource pattern) grant."""
    statement = {"Effect": "Allow", "Action": action, "Resource": pattern, "Condition": condition}
    return any(
        statement_matches(statement, call, resource)
        for call in calls
        for resource in call.resources
    )


def local_policy(function: str) -> dict[str, Any]:
    """The policy document of `function` in the `local` stage, as the deploy applies it."""
    path = PROJECT_ROOT / ".chalice" / f"policy-local-{function}.json"
    return dict(json.loads(path.read_text()))


LOCAL = "arn:aws:{service}:us-east-1:123456789012:{resource}"


def local_arn(service: str, resource: str) -> str:
    """An ARN of the `local` stage's region and account (moto's)."""
    return LOCAL.format(service=service, resource=resource)
