"""`chalicelib.aws.dynamo_batch`: what DynamoDB leaves unprocessed is asked again, then named.

DynamoDB answers a batch call with part of it unprocessed under throttling; moto never does,
so a botocore `after-call` hook on a real client (the AWS boundary) moves part of moto's answer
into `UnprocessedKeys` / `UnprocessedItems`, as DynamoDB would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.aws.dynamo_batch import Unprocessed, get_all, write_all


@pytest.fixture
def table(aws_env: str) -> Iterator[tuple[Any, str]]:
    client = boto3.client("dynamodb")
    name = f"batch-{uuid.uuid4().hex[:10]}"
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield client, name
    client.delete_table(TableName=name)


def _key(number: int) -> dict[str, Any]:
    return {"id": {"N": str(number)}}


class _Throttle:
    """Leaves `hold` keys of each BatchGetItem answer unprocessed, for the first `times` calls."""

    def __init__(self, table: str, hold: int, times: int) -> None:
        self.table, self.hold, self.times, self.calls = table, hold, times, 0

    def __call__(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        if self.calls > self.times:
            return
        rows = parsed["Responses"][self.table]
        held, parsed["Responses"][self.table] = rows[: self.hold], rows[self.hold :]
        if held:
            parsed["UnprocessedKeys"] = {self.table: {"Keys": [{"id": r["id"]} for r in held]}}


def _seed(client: Any, table: str, count: int) -> None:
    for start in range(0, count, 25):
        requests = [
            {"PutRequest": {"Item": {**_key(n), "v": {"S": f"row {n}"}}}}
            for n in range(start, min(count, start + 25))
        ]
        write_all(client, table, requests)


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
# one table for all examples: seeding is idempotent and each example reads only its own keys
@given(count=st.integers(1, 100), hold=st.integers(1, 100), times=st.integers(1, 4))
def test_get_all_asks_again_for_unprocessed_keys_until_every_row_is_read(
    table: tuple[Any, str], count: int, hold: int, times: int
) -> None:
    client, name = table
    _seed(client, name, count)
    throttle = _Throttle(name, hold, times)
    client.meta.events.register("after-call.dynamodb.BatchGetItem", throttle)
    try:
        sleeps: list[float] = []
        rows = get_all(client, name, [_key(n) for n in range(count)], sleep=sleeps.append)
    finally:
        client.meta.events.unregister("after-call.dynamodb.BatchGetItem", throttle)
    assert sorted(int(row["id"]["N"]) for row in rows) == list(range(count))
    assert len(sleeps) == throttle.calls - 1  # a backoff before every call but the first
    assert all(0 <= pause <= 2.0 for pause in sleeps)


def test_get_all_names_the_table_and_the_keys_it_never_read(table: tuple[Any, str]) -> None:
    client, name = table
    _seed(client, name, 10)
    throttle = _Throttle(name, hold=3, times=1_000)
    client.meta.events.register("after-call.dynamodb.BatchGetItem", throttle)
    try:
        with pytest.raises(Unprocessed, match=rf"3 keys still unread in {name} after 4 calls"):
            get_all(client, name, [_key(n) for n in range(10)], attempts=4, sleep=lambda _: None)
    finally:
        client.meta.events.unregister("after-call.dynamodb.BatchGetItem", throttle)
    assert throttle.calls == 4


def test_get_all_projects_only_the_attributes_asked_for(table: tuple[Any, str]) -> None:
    client, name = table
    _seed(client, name, 3)
    rows = get_all(client, name, [_key(n) for n in range(3)], ["id"])
    assert sorted(rows, key=lambda row: row["id"]["N"]) == [_key(0), _key(1), _key(2)]


class _WriteThrottle:
    """Claims the last request of each BatchWriteItem unprocessed for the first `times` calls
    (moto wrote it; writing a put again is what a resend does anyway)."""

    def __init__(self, table: str, times: int) -> None:
        self.table, self.times, self.calls = table, times, 0
        self.resent: list[Any] = []

    def before(self, params: dict[str, Any], **_: Any) -> None:
        self.resent.append(params["RequestItems"][self.table])

    def after(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        if self.calls <= self.times:
            parsed["UnprocessedItems"] = {self.table: self.resent[-1][-1:]}


def test_write_all_resends_only_what_was_left_and_then_names_it(
    table: tuple[Any, str],
) -> None:
    client, name = table
    requests = [{"PutRequest": {"Item": {**_key(n), "v": {"S": "x"}}}} for n in range(7)]
    for times, attempts, fails in ((2, 10, False), (1_000, 3, True)):
        throttle = _WriteThrottle(name, times)
        client.meta.events.register(
            "provide-client-params.dynamodb.BatchWriteItem", throttle.before
        )
        client.meta.events.register("after-call.dynamodb.BatchWriteItem", throttle.after)
        try:
            if fails:
                with pytest.raises(Unprocessed, match=rf"1 items still unprocessed by {name}"):
                    write_all(client, name, requests, attempts=attempts, sleep=lambda _: None)
            else:
                write_all(client, name, requests, attempts=attempts, sleep=lambda _: None)
        finally:
            client.meta.events.unregister(
                "provide-client-params.dynamodb.BatchWriteItem", throttle.before
            )
            client.meta.events.unregister("after-call.dynamodb.BatchWriteItem", throttle.after)
        assert [len(sent) for sent in throttle.resent] == [7] + [1] * (min(times, attempts - 1))
        assert client.scan(TableName=name, Select="COUNT")["Count"] == 7
