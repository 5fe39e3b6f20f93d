"""The local cloud's fixes of moto (Kinesis shard, DynamoDB read path, per-request costs) answer
exactly what moto itself answers."""

from __future__ import annotations

import contextlib
import copy
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.exceptions
import moto.backends
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.core.base_backend import BackendDict
from moto.dynamodb.models import table as dynamodb_table
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import SecondaryIndex, Table
from moto.dynamodb.responses import DynamoHandler, DynamoResult
from moto.kinesis.models import Shard
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from localcloud.emulators import (
    moto_dynamodb_query,
    moto_dynamodb_wire,
    moto_kinesis,
    moto_requests,
)
from localcloud.emulators.moto_process import MotoServer


def _shard(count: int) -> Shard:
    shard = Shard(0, 0, 2**128)
    for number in range(count):
        moto_kinesis._original_put_record(shard, f"key-{number}", "ZGF0YQ==", "")
    return shard


@given(
    count=st.integers(min_value=0, max_value=60),
    after=st.integers(min_value=0, max_value=70),
    limit=st.none() | st.integers(min_value=1, max_value=80),
)
def test_get_records_matches_moto(count: int, after: int, limit: int | None) -> None:
    shard = _shard(count)
    fast_records, fast_last, _ = moto_kinesis._get_records(shard, str(after), limit)
    slow_records, slow_last, _ = moto_kinesis._original_get_records(shard, str(after), limit)
    assert [r.sequence_number for r in fast_records] == [r.sequence_number for r in slow_records]
    assert fast_last == slow_last


@given(count=st.integers(min_value=0, max_value=30))
def test_min_and_max_sequence_numbers_match_moto(count: int) -> None:
    shard = _shard(count)
    assert moto_kinesis._max_sequence_number(shard) == moto_kinesis._original_max(shard)
    assert moto_kinesis._min_sequence_number(shard) == moto_kinesis._original_min(shard)


def test_concurrent_puts_lose_no_record() -> None:
    shard = Shard(0, 0, 2**128)

    def put_many(worker: int) -> None:
        for number in range(300):
            moto_kinesis._locked_put_record(shard, f"key-{worker}-{number}", "ZGF0YQ==", "")

    threads = [threading.Thread(target=put_many, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(shard.records) == 1800
    assert list(shard.records) == list(range(1, 1801))


# --- DynamoDB read path: the patched handler answers byte for byte what stock moto answers ---

_DYNAMODB_PATCHES = (
    (
        DynamoResult,
        "execute_result",
        moto_dynamodb_wire,
        "_dynamo_execute_result",
        "_original_execute_result",
    ),
    (DynamoResult, "__init__", moto_dynamodb_wire, "_dynamo_result_init", "_original_result_init"),
    (SecondaryIndex, "project", moto_dynamodb_wire, "_project", "_original_project"),
    (Item, "project", moto_dynamodb_wire, "_item_project", "_original_item_project"),
    (Item, "size", moto_dynamodb_wire, "_item_size", "_original_item_size"),
    (Table, "query", moto_dynamodb_query, "_query", "_original_query"),
    (DynamoType, "size", moto_dynamodb_wire, "_value_size", "_original_size"),
    (Table, "all_items", moto_dynamodb_query, "_all_items", "_original_all_items"),
    (Table, "sorted_items", moto_dynamodb_query, "_sorted_items", "_original_sorted_items"),
    (
        Table,
        "_item_comes_before_dct",
        moto_dynamodb_query,
        "_item_comes_before_dct",
        "_original_comes_before",
    ),
)


@contextlib.contextmanager
def _dynamodb_read_path(patched: bool) -> Iterator[None]:
    """moto's DynamoDB read path as the local cloud's moto server installs it, or stock moto's."""
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, *_ in _DYNAMODB_PATCHES]
    saved_copy = dynamodb_table.copy
    for owner, name, module, fast, stock in _DYNAMODB_PATCHES:
        setattr(owner, name, getattr(module, fast if patched else stock))
    shim = SimpleNamespace(copy=copy.copy, deepcopy=moto_dynamodb_query._deepcopy)
    dynamodb_table.copy = shim if patched else copy  # type: ignore[assignment]
    try:
        yield
    finally:
        for owner, name, value in saved:
            if value is None:  # inherited (DynamoResult.execute_result)
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        dynamodb_table.copy = saved_copy


def _answer(call: Callable[..., Any], **request: Any) -> dict[str, Any]:
    """A response as the client sees it, with what differs per request (ids, date) dropped: the
    x-amz-crc32 header left in it is the checksum of the body's bytes."""
    try:
        answer = call(**request)
    except botocore.exceptions.ClientError as error:
        answer = dict(error.response)
    meta = answer.pop("ResponseMetadata", {})
    headers = {
        name: value
        for name, value in meta.get("HTTPHeaders", {}).items()
        if name not in ("date", "x-amzn-requestid", "x-amz-request-id")
    }
    return {"status": meta.get("HTTPStatusCode"), "headers": headers, **answer}


def _both(call: Callable[..., Any], **request: Any) -> dict[str, Any]:
    with _dynamodb_read_path(patched=False):
        stock = _answer(call, **request)
    with _dynamodb_read_path(patched=True):
        fast = _answer(call, **request)
    assert fast == stock, request
    return fast


_NAMES = ["pk", "sk", "gk", "gr", "a", "b", "c"]
_numbers = st.sampled_from(
    ["0", "1", "-1", "01", "1.50", "1e2", "1E+2", "-0", "12345678901234567890", "0.001"]
)
_strings = st.text(alphabet="ab#é", min_size=1, max_size=4)
_scalars = st.one_of(
    _strings.map(lambda s: {"S": s}),
    _numbers.map(lambda n: {"N": n}),
    st.binary(min_size=1, max_size=4).map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.sets(_strings, min_size=1, max_size=3).map(lambda s: {"SS": sorted(s)}),
    st.sets(st.sampled_from(["1", "2", "3.5", "10"]), min_size=1, max_size=3).map(
        lambda s: {"NS": sorted(s)}
    ),
    st.sets(st.binary(min_size=1, max_size=3), min_size=1, max_size=2).map(
        lambda s: {"BS": sorted(s)}
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda v: {"L": v}),
        st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2).map(lambda v: {"M": v}),
    ),
    max_leaves=4,
)


@st.composite
def _tables(draw: st.DrawFn) -> dict[str, Any]:
    """A table (hash key, maybe a range key), a GSI with any projection, and items."""
    types = {name: draw(st.sampled_from(["S", "N"])) for name in ("pk", "sk", "gk", "gr")}
    has_range = draw(st.booleans())
    index_range = draw(st.booleans())
    projection = draw(
        st.sampled_from(["ALL", "KEYS_ONLY", "INCLUDE"]).flatmap(
            lambda kind: (
                st.just({"ProjectionType": kind})
                if kind != "INCLUDE"
                else st.lists(
                    st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True
                ).map(lambda names: {"ProjectionType": "INCLUDE", "NonKeyAttributes": names})
            )
        )
    )
    key_value = {
        "S": st.sampled_from(["k1", "k2", "k3"]).map(lambda s: {"S": s}),
        "N": st.sampled_from(["1", "2", "3"]).map(lambda n: {"N": n}),
    }
    items: dict[tuple[str, ...], dict[str, Any]] = {}
    for _ in range(draw(st.integers(min_value=0, max_value=14))):
        item = {"pk": draw(key_value[types["pk"]])}
        if has_range:
            item["sk"] = draw(key_value[types["sk"]])
        if draw(st.integers(min_value=0, max_value=5)):  # mostly in the index
            item["gk"] = draw(key_value[types["gk"]])
        if index_range and draw(st.booleans()):
            item["gr"] = draw(key_value[types["gr"]])
        for name in draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True)):
            item[name] = draw(_values)
        items[tuple(str(item[k]) for k in ("pk", "sk") if k in item)] = item
    return {
        "types": types,
        "has_range": has_range,
        "index_range": index_range,
        "projection": projection,
        "items": list(items.values()),
    }


def _create(client: Any, table: dict[str, Any]) -> None:
    keys = [("pk", "HASH")] + ([("sk", "RANGE")] if table["has_range"] else [])
    index_keys = [("gk", "HASH")] + ([("gr", "RANGE")] if table["index_range"] else [])
    client.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": n, "KeyType": k} for n, k in keys],
        AttributeDefinitions=[
            {"AttributeName": n, "AttributeType": table["types"][n]} for n, _ in keys + index_keys
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi",
                "KeySchema": [{"AttributeName": n, "KeyType": k} for n, k in index_keys],
                "Projection": table["projection"],
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for item in table["items"]:
        client.put_item(TableName="t", Item=item)


def _pages(client: Any, call: str, **request: Any) -> None:
    """Every page of a Query or Scan, stock and patched alike (each page compared)."""
    for _ in range(40):
        answer = _both(getattr(client, call), **request)
        if "LastEvaluatedKey" not in answer:
            return
        request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
    raise AssertionError(f"{call} did not finish in 40 pages: {request}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=_tables(),
    limit=st.none() | st.integers(min_value=1, max_value=4),
    forward=st.booleans(),
    projection=st.none() | st.sampled_from(["pk, a", "a", "#c, b, gk"]),
    capacity=st.sampled_from(["NONE", "TOTAL", "INDEXES"]),
    data=st.data(),
)
def test_dynamodb_reads_match_stock_moto(
    table: dict[str, Any],
    limit: int | None,
    forward: bool,
    projection: str | None,
    capacity: str,
    data: st.DataObject,
) -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _create(client, table)
        common: dict[str, Any] = {"TableName": "t", "ReturnConsumedCapacity": capacity}
        if limit is not None:
            common["Limit"] = limit
        if projection is not None:
            common["ProjectionExpression"] = projection
            if "#c" in projection:
                common["ExpressionAttributeNames"] = {"#c": "c"}
        hashes = {str(item["pk"]): item["pk"] for item in table["items"]} or {"-": {"S": "none"}}
        for value in hashes.values():
            _pages(
                client,
                "query",
                KeyConditionExpression="pk = :h",
                ExpressionAttributeValues={":h": value},
                ScanIndexForward=forward,
                **common,
            )
        index_hashes = {str(item["gk"]): item["gk"] for item in table["items"] if "gk" in item}
        for value in index_hashes.values():
            request = dict(common, IndexName="gsi", ScanIndexForward=forward)
            if projection is not None and table["projection"]["ProjectionType"] != "ALL":
                request.pop("ProjectionExpression")
                request.pop("ExpressionAttributeNames", None)
            _pages(
                client,
                "query",
                KeyConditionExpression="gk = :h",
                ExpressionAttributeValues={":h": value},
                **request,
            )
        _pages(client, "scan", **common)
        _pages(client, "scan", **dict(common, IndexName="gsi", Limit=limit or 5))
        stored = [{k: item[k] for k in ("pk", "sk") if k in item} for item in table["items"]]
        missing = {"pk": {table["types"]["pk"]: "404" if table["types"]["pk"] == "N" else "no"}}
        if table["has_range"]:
            missing["sk"] = {table["types"]["sk"]: "1" if table["types"]["sk"] == "N" else "k1"}
        keys = data.draw(st.lists(st.sampled_from([*stored, missing]), unique_by=str, max_size=6))
        request = {"Keys": keys} if keys else {"Keys": [missing]}
        if projection is not None:
            request["ProjectionExpression"] = projection
            if "#c" in projection:
                request["ExpressionAttributeNames"] = {"#c": "c"}
        _both(client.batch_get_item, RequestItems={"t": request}, ReturnConsumedCapacity=capacity)
        for key in keys[:2]:
            get = {k: v for k, v in common.items() if k != "Limit"}
            _both(client.get_item, Key=key, **get)


def test_size_limited_index_pages_match_stock_moto() -> None:
    """Pages cut by moto's 1 MB limit (not by Limit) start and end where stock moto's do."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        table = {
            "types": {"pk": "N", "sk": "S", "gk": "S", "gr": "S"},
            "has_range": False,
            "index_range": True,
            "projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a"]},
            "items": [
                {
                    "pk": {"N": str(number)},
                    "gk": {"S": "run"},
                    "gr": {"S": f"page#{number // 7:04d}"},
                    "a": {"S": "2024-01-01"},
                    "b": {"S": "x" * 90_000},
                }
                for number in range(40)
            ],
        }
        _create(client, table)
        pages = 0
        request: dict[str, Any] = {
            "TableName": "t",
            "IndexName": "gsi",
            "KeyConditionExpression": "gk = :h",
            "ExpressionAttributeValues": {":h": {"S": "run"}},
        }
        while True:
            answer = _both(client.query, **request)
            pages += 1
            if "LastEvaluatedKey" not in answer:
                break
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        assert pages == 4  # 40 items of ~90 KB: 11 per 1 MB page


def test_errors_and_invalid_requests_match_stock_moto() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _create(
            client,
            {
                "types": {"pk": "S", "sk": "S", "gk": "S", "gr": "S"},
                "has_range": False,
                "index_range": False,
                "projection": {"ProjectionType": "KEYS_ONLY"},
                "items": [{"pk": {"S": "k1"}, "gk": {"S": "g"}}],
            },
        )
        expression = {
            "KeyConditionExpression": "gk = :h",
            "ExpressionAttributeValues": {":h": {"S": "g"}},
        }
        assert _both(client.query, TableName="t", IndexName="nope", **expression)["status"] == 400
        assert _both(client.query, TableName="missing", **expression)["status"] == 400
        too_many = [{"pk": {"S": f"k{n}"}} for n in range(101)]
        assert _both(client.batch_get_item, RequestItems={"t": {"Keys": too_many}})["status"] == 400
        assert _both(client.get_item, TableName="t", Key={"pk": {"S": "absent"}})["status"] == 200


_EVERY_KIND = [
    *({"N": number} for number in ["1", "01", "1.50", "1e2", "-0", "12345678901234567890"]),
    {"S": "é"},
    {"B": b"\x00\xff"},
    {"BOOL": False},
    {"NULL": True},
    {"SS": ["b", "a", "c"]},
    {"NS": ["10", "2", "3.5"]},
    {"BS": [b"b", b"a"]},
    {"M": {"x": {"N": "1e2"}, "y": {"L": [{"S": "s"}, {"B": b"z"}]}}},
    {"L": []},
]


@pytest.mark.parametrize(
    "projection",
    [
        {"ProjectionType": "ALL"},
        {"ProjectionType": "KEYS_ONLY"},
        {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a"]},
    ],
)
def test_index_projection_of_every_value_kind_matches_stock_moto(
    projection: dict[str, Any],
) -> None:
    """Values moto's projection round trip changes (numbers not in canonical form, sets, binary)
    or keeps (strings, booleans) come out of an index query as stock moto gives them."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _create(
            client,
            {
                "types": {"pk": "N", "sk": "S", "gk": "S", "gr": "N"},
                "has_range": False,
                "index_range": True,
                "projection": projection,
                "items": [
                    {"pk": {"N": str(n)}, "gk": {"S": "g"}, "gr": {"N": str(n)}, "a": value}
                    for n, value in enumerate(_EVERY_KIND)
                ],
            },
        )
        request = {
            "TableName": "t",
            "IndexName": "gsi",
            "KeyConditionExpression": "gk = :h",
            "ExpressionAttributeValues": {":h": {"S": "g"}},
        }
        assert len(_both(client.query, **request)["Items"]) == len(_EVERY_KIND)
        _pages(client, "query", Limit=3, **request)


@given(value=_values)
def test_value_size_matches_moto(value: dict[str, Any]) -> None:
    """The size moto's page limit and item limit count is the same with the fast path."""
    typed = DynamoType(value)
    assert moto_dynamodb_wire._value_size(typed) == moto_dynamodb_wire._original_size(typed)


@given(attributes=st.dictionaries(st.text(alphabet="aé#", min_size=1, max_size=3), _values))
def test_item_size_matches_moto(attributes: dict[str, Any]) -> None:
    """The size of a whole item (the 1 MB page limit) is the same with the fast path."""
    item = Item(DynamoType({"S": "k"}), None, attributes)
    assert moto_dynamodb_wire._item_size(item) == moto_dynamodb_wire._original_item_size(item)


@contextlib.contextmanager
def _writes_counted() -> Iterator[None]:
    """The moto server's count of DynamoDB actions that may change items (it invalidates the
    cached index queries), installed for stock and patched requests alike."""
    saved = DynamoHandler.__dict__["call_action"]
    DynamoHandler.call_action = moto_dynamodb_query._counted_call_action  # type: ignore[method-assign]
    try:
        yield
    finally:
        DynamoHandler.call_action = saved  # type: ignore[method-assign]


def _write(client: Any, table: dict[str, Any], kind: str, number: int, value: Any) -> None:
    """One change between two pages: an item joins the queried index partition, leaves the
    table, or moves to another partition."""
    items = table["items"]
    pk = {
        table["types"]["pk"]: str(900 + number) if table["types"]["pk"] == "N" else f"new{number}"
    }
    if kind == "put" or not items:
        item = {"pk": pk, "gk": value, "a": {"S": "x" * number}}
        if table["has_range"]:
            item["sk"] = {table["types"]["sk"]: "1" if table["types"]["sk"] == "N" else "k1"}
        if table["index_range"]:
            item["gr"] = {table["types"]["gr"]: "2" if table["types"]["gr"] == "N" else "k2"}
        client.put_item(TableName="t", Item=item)
        return
    target = items[number % len(items)]
    key = {name: target[name] for name in ("pk", "sk") if name in target}
    if kind == "delete":
        client.delete_item(TableName="t", Key=key)
    else:
        other = {table["types"]["gk"]: "9" if table["types"]["gk"] == "N" else "moved"}
        client.update_item(
            TableName="t",
            Key=key,
            UpdateExpression="SET gk = :g",
            ExpressionAttributeValues={":g": other},
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=_tables(),
    limit=st.integers(min_value=1, max_value=3),
    forward=st.booleans(),
    ranged=st.booleans(),
    writes=st.lists(
        st.tuples(st.sampled_from(["put", "delete", "move"]), st.integers(0, 13)), max_size=4
    ),
)
def test_index_pages_with_writes_between_them_match_stock_moto(
    table: dict[str, Any],
    limit: int,
    forward: bool,
    ranged: bool,
    writes: list[tuple[str, int]],
) -> None:
    """The cached index query (`_index_query`) answers every page as stock moto does, also
    when items join, leave or move between two pages, and with a range condition."""
    with mock_aws(), _writes_counted():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _create(client, table)
        values = {str(item["gk"]): item["gk"] for item in table["items"] if "gk" in item}
        for value in values.values() or [{table["types"]["gk"]: "1"}]:
            request: dict[str, Any] = {
                "TableName": "t",
                "IndexName": "gsi",
                "KeyConditionExpression": "gk = :h",
                "ExpressionAttributeValues": {":h": value},
                "Limit": limit,
                "ScanIndexForward": forward,
            }
            if ranged and table["index_range"]:
                low = {table["types"]["gr"]: "1" if table["types"]["gr"] == "N" else "k1"}
                request["KeyConditionExpression"] += " AND gr > :r"
                request["ExpressionAttributeValues"] = {":h": value, ":r": low}
            pending = list(writes)
            for _ in range(60):
                answer = _both(client.query, **request)
                if pending:
                    kind, number = pending.pop(0)
                    _write(client, table, kind, number, value)
                if "LastEvaluatedKey" not in answer:
                    break
                request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
            else:
                raise AssertionError(f"no last page in 60: {request}")


def test_a_read_back_reads_each_index_item_once_per_page() -> None:
    """Reading an index partition back page by page costs O(page): after the first page, each
    page starts where the previous one ended (moto's walk past the start key is not taken)."""
    with mock_aws(), _writes_counted(), _dynamodb_read_path(patched=True):
        client = boto3.client("dynamodb", region_name="us-east-1")
        table = {
            "types": {"pk": "N", "sk": "S", "gk": "S", "gr": "N"},
            "has_range": False,
            "index_range": True,
            "projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a"]},
            "items": [
                {"pk": {"N": str(n)}, "gk": {"S": "run"}, "gr": {"N": str(n // 10)}}
                for n in range(300)
            ],
        }
        _create(client, table)
        walked: list[int] = []
        original = Table._item_comes_before_dct

        def counting(self: Table, *args: Any) -> bool:
            walked.append(1)
            return original(self, *args)

        Table._item_comes_before_dct = counting  # type: ignore[method-assign,assignment]
        try:
            request: dict[str, Any] = {
                "TableName": "t",
                "IndexName": "gsi",
                "KeyConditionExpression": "gk = :h",
                "ExpressionAttributeValues": {":h": {"S": "run"}},
                "Limit": 10,
            }
            pages = 0
            while True:
                answer = client.query(**request)
                pages += 1
                if "LastEvaluatedKey" not in answer:
                    break
                request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        finally:
            Table._item_comes_before_dct = original  # type: ignore[method-assign]
        assert pages == 30
        assert len(walked) <= 2 * pages  # two checks per page, not a walk from the first item


# --- Every request: the service found once per host, failed requests only in the access log ---


@contextlib.contextmanager
def _requests_patched() -> Iterator[None]:
    """moto's dispatcher, backend lookup and request handler as the local cloud's moto server
    patches them; stock moto's again afterwards."""
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in moto_requests.PATCHES]
    moto_requests.apply()
    try:
        yield
    finally:
        for owner, name, value in saved:
            if value is None:  # inherited (MotoRequestHandler.log_request)
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        moto_requests._created.clear()


_SERVICES = sorted(moto.backends.list_of_moto_modules())
_REGIONS = ("us-east-1", "eu-west-3", "ap-southeast-2", "cn-north-1", "xx-nowhere-9")
_hosts = st.one_of(
    st.none(),
    st.just("moto_api"),
    st.sampled_from(_SERVICES),
    st.builds(
        "{}.{}.amazonaws.com".format,
        st.sampled_from([*_SERVICES, "sts", "dynamodb", "kinesis", "s3", "nowhere"]),
        st.sampled_from(_REGIONS),
    ),
    st.builds("data.{}.{}.amazonaws.com".format, st.sampled_from(_SERVICES), st.just("us-east-1")),
    st.text(max_size=30),
)


@settings(max_examples=200)
@given(hosts=st.lists(_hosts, min_size=1, max_size=8))
def test_every_host_resolves_to_the_backend_moto_picks(hosts: list[str | None]) -> None:
    stock = DomainDispatcherApplication(create_backend_app)
    with _requests_patched():
        patched = DomainDispatcherApplication(create_backend_app)
        for host in [*hosts, *hosts]:  # the second time from the table
            assert patched.get_backend_for_host(host) == (
                moto_requests._original_get_backend_for_host(stock, host)
            )


def test_the_host_table_is_bounded() -> None:
    with _requests_patched():
        dispatcher = DomainDispatcherApplication(create_backend_app)
        for number in range(moto_requests.MAX_HOSTS + 20):
            dispatcher.get_backend_for_host(f"host-{number}.example")
        assert len(dispatcher.__dict__["_backend_by_host"]) == moto_requests.MAX_HOSTS
        assert dispatcher.get_backend_for_host("dynamodb.us-east-1.amazonaws.com") == "dynamodb"


def test_a_reset_empties_every_backend_as_moto_does() -> None:
    def table(client: Any) -> None:
        client.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

    with _requests_patched(), mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for _ in range(3):  # a backend created again after a reset is reset again
            table(client)
            assert client.list_tables()["TableNames"] == ["t"]
            BackendDict.reset()  # what moto's /moto-api/reset and mock_aws do
            assert client.list_tables()["TableNames"] == []


def test_the_access_log_keeps_failed_requests_only(aws_env: str, moto_server: MotoServer) -> None:
    client = boto3.client("dynamodb")
    missing = f"missing-{uuid.uuid4().hex}"
    for _ in range(3):
        client.list_tables()
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_table(TableName=missing)
    log = moto_server.log_path.read_text(errors="replace")
    # the failed request (werkzeug colours the request line of a failure)
    assert re.search(r'POST / HTTP/1\.1(\x1b\[0m)?" 400 ', log)
    assert not re.search(r'" 200 ', log)  # no successful one, in this test or any before it
