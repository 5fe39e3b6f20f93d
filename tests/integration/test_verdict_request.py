"""The early verdict request (`chalicelib.reconcile.verdict_request`) against moto's DynamoDB.

A run's manifest item in a runs table of its own; the async `Invoke` of the reconcile function
is answered 202 at the botocore boundary (as Lambda answers an async invocation) and recorded,
so each test sees exactly which requests the pipeline made.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ClientError
from chalice.app import CloudWatchEvent
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.aws import clients as aws
from chalicelib.reconcile.verdict_request import (
    LOADED,
    VerdictRequests,
    handled_per_run,
    requested_run,
    sibling_function_arn,
    verdict_event,
)
from chalicelib.runs.manifest import RunManifests
from infra.stages import FUNCTIONS
from localcloud.triggers.lambda_runtime import LambdaContext, scheduled_event

LOAD = LambdaContext("moovitamix-pipeline-local-load")
RECONCILE_ARN = "arn:aws:lambda:us-east-1:123456789012:function:moovitamix-pipeline-local-reconcile"


def verdict_requests(table: str, context: Any) -> VerdictRequests:
    """The early verdict request of the function of `context`, on the runs table `table`."""
    return VerdictRequests(RunManifests(aws.client("dynamodb"), table), context)


@pytest.fixture
def table(aws_env: str) -> Iterator[str]:
    name = f"runs-{uuid.uuid4().hex[:8]}"
    client = aws.client("dynamodb")
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "run_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "run_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    client.delete_table(TableName=name)


@pytest.fixture
def invoked(aws_env: str) -> Iterator[list[dict[str, Any]]]:
    """The async invocations the code under test made: {FunctionName, event}."""
    calls: list[dict[str, Any]] = []

    def accept(params: dict[str, Any], **_: Any) -> Any:
        name = unquote(params["url_path"].split("/functions/", 1)[1].split("/", 1)[0])
        calls.append({"function": name, "event": json.loads(params["body"])})
        return AWSResponse("", 202, HTTPHeaders(), None), {"StatusCode": 202}

    events = aws.client("lambda").meta.events
    events.register_first("before-call.lambda.Invoke", accept)
    yield calls
    events.unregister("before-call.lambda.Invoke", accept)


def manifest(table: str, run_id: str, *, status: str, published: dict[str, int]) -> None:
    item: dict[str, Any] = {
        "run_id": {"S": run_id},
        "ingest_status": {"S": status},
        "resources": {"S": ",".join(published)},
    }
    item.update({f"published.{name}": {"N": str(n)} for name, n in published.items()})
    aws.client("dynamodb").put_item(TableName=table, Item=item)


def set_status(table: str, run_id: str, status: str) -> None:
    aws.client("dynamodb").update_item(
        TableName=table,
        Key={"run_id": {"S": run_id}},
        UpdateExpression="SET ingest_status = :s",
        ExpressionAttributeValues={":s": {"S": status}},
    )


def stored(table: str, run_id: str) -> dict[str, Any]:
    item = aws.client("dynamodb").get_item(
        TableName=table, Key={"run_id": {"S": run_id}}, ConsistentRead=True
    )["Item"]
    return dict(item)


def test_the_load_asks_once_when_it_handled_what_was_published(
    table: str, invoked: list[dict[str, Any]]
) -> None:
    manifest(table, "r1", status="published", published={"users": 3, "tracks": 2})
    requests = verdict_requests(table, LOAD)
    assert requests.after_load({"r1": 2}) == []
    assert invoked == []
    assert requests.after_load({"r1": 3}) == ["r1"]
    assert requests.after_load({"r1": 1}) == []  # a re-delivered batch asks no second time
    assert len(invoked) == 1
    assert invoked[0]["function"].endswith(":function:moovitamix-pipeline-local-reconcile")
    assert requested_run(invoked[0]["event"]) == "r1"
    assert stored(table, "r1")[LOADED] == {"N": "6"}


def test_nothing_is_asked_before_the_ingest_finished_then_the_ingest_asks(
    table: str, invoked: list[dict[str, Any]]
) -> None:
    manifest(table, "r2", status="running", published={"users": 4})
    assert verdict_requests(table, LOAD).after_load({"r2": 4}) == []
    ingest = verdict_requests(table, LambdaContext("moovitamix-pipeline-local-ingest"))
    assert ingest.after_ingest("r2") is False  # still running
    set_status(table, "r2", "published")
    assert ingest.after_ingest("r2") is True
    assert ingest.after_ingest("r2") is False
    assert [requested_run(call["event"]) for call in invoked] == ["r2"]


def test_a_run_with_nothing_published_is_asked_for_by_the_ingest(
    table: str, invoked: list[dict[str, Any]]
) -> None:
    manifest(table, "r3", status="published", published={"users": 0})
    assert verdict_requests(table, LOAD).after_ingest("r3") is True
    assert len(invoked) == 1


def test_a_request_that_fails_never_fails_the_batch(table: str, aws_env: str) -> None:
    manifest(table, "r4", status="published", published={"users": 1})

    def refuse(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDeniedException"}}, "Invoke")

    events = aws.client("lambda").meta.events
    events.register_first("before-call.lambda.Invoke", refuse)
    try:
        assert verdict_requests(table, LOAD).after_load({"r4": 1}) == []
    finally:
        events.unregister("before-call.lambda.Invoke", refuse)


def test_a_context_without_a_function_asks_nothing(
    table: str, invoked: list[dict[str, Any]]
) -> None:
    manifest(table, "r5", status="published", published={"users": 1})
    assert verdict_requests(table, object()).after_load({"r5": 1}) == []
    assert invoked == []
    assert LOADED in stored(table, "r5")  # what was handled is still counted


def record(run_id: str | None, sequence: str, data: bytes | None = None) -> dict[str, Any]:
    payload = data if data is not None else orjson.dumps({"run_id": run_id, "entity": "users"})
    return {"kinesis": {"sequenceNumber": sequence, "data": base64.b64encode(payload).decode()}}


def test_handled_records_are_counted_per_run_without_the_failed_ones() -> None:
    records = [
        record("a", "1"),
        record("a", "2"),
        record("b", "3"),
        record("a", "4"),
        record(None, "5", b"\x00 not json"),
        record(None, "6", orjson.dumps(["no", "run"])),
    ]
    assert handled_per_run(records, ["2"]) == {"a": 2, "b": 1}
    assert handled_per_run(records, ["1", "2", "3", "4"]) == {}


def test_the_request_reaches_the_reconcile_handler_through_chalice() -> None:
    event = CloudWatchEvent(verdict_event("run-9", RECONCILE_ARN), None).to_dict()
    assert requested_run(event) == "run-9"
    assert event["region"] == "us-east-1"
    assert event["resources"] == [RECONCILE_ARN]
    assert requested_run(scheduled_event("arn:aws:events:us-east-1:1:rule/x", "us-east-1")) is None


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(
    app=names,
    stage=names.filter(lambda s: not s.startswith("-")),
    function=st.sampled_from(FUNCTIONS),
    qualifier=st.sampled_from(["", ":$LATEST", ":live", ":7"]),
    region=st.sampled_from(["us-east-1", "eu-west-3"]),
)
def test_the_reconcile_function_is_the_caller_s_sibling(
    app: str, stage: str, function: str, qualifier: str, region: str
) -> None:
    caller = f"arn:aws:lambda:{region}:210987654321:function:{app}-{stage}-{function}{qualifier}"
    context = type("Context", (), {"invoked_function_arn": caller})()
    assert sibling_function_arn(context, "reconcile") == (
        f"arn:aws:lambda:{region}:210987654321:function:{app}-{stage}-reconcile"
    )
