"""The moto server, with moto's quadratic Kinesis shard operations made constant-time, schedule
rules that no longer swallow put events (`_send_to_targets`) and event-source mappings that moto
records but does not run itself (`_create_event_source_mapping`).

moto keeps a shard's records in an ordered dict keyed by consecutive sequence numbers, but it
finds the newest one with `list(keys)[-1]` (once per *record* put) and serves `GetRecords` by
walking the shard from its first record (once per call). Both cost O(records in the shard), so
a stream of n records costs O(n^2): 1M records never finish. Kinesis itself costs the same per
record whatever the stream holds, so these two methods are replaced by equivalents that jump
straight to the position; the results are identical (checked in
tests/integration/test_moto_server.py).

moto's `Shard.put_record` is also not safe for concurrency (its own comment says so): two
PutRecords served at once by the threaded server can draw the same sequence number, and one
record silently replaces the other. Concurrent producers (the fan-out workers) lost records
that way (found by the run reconciliation), so shard reads and writes take one lock here.

moto's DynamoDB read path costs ~1 ms of Python per returned row, so reading back a run's rows
(a GSI Query of 1 MB pages, BatchGetItem) took longer than the rest of the pipeline. Two causes,
each replaced by an equivalent (identical responses, checked by a property test against stock
moto in tests/integration/test_moto_server.py):
- moto 5.2's generic response serializer walks every attribute of every item through the
  botocore output shape, trying several key spellings per member. The items of Query, Scan,
  GetItem and BatchGetItem (AttributeValue maps: plain JSON on the wire) are written directly
  here; everything else in those responses (counts, LastEvaluatedKey, ConsumedCapacity,
  UnprocessedKeys, errors, status, headers, x-amz-crc32) still goes through moto's serializer.
- An index Query deep-copies every full item, then projects it through a Python <-> DynamoDB
  JSON round trip. For KEYS_ONLY / INCLUDE indexes the projection here keeps the attributes
  whose round trip is the identity (S, BOOL, N already in canonical form) as they are and hands
  any other item to moto's own projection; since it builds new items, the deep copy before it
  is skipped (only in that query). The size of a string or number value (counted twice per row
  for the 1 MB page limit) is computed without moto's chain of type tests.
- Every Query page sorts the whole table (twice for an index) and compares every item before
  the page's start key with it: per-comparison casts and DynamoType constructions made that
  ~0.7 ms per row at 100k rows. The sorts here compare cast values computed once per item (the
  same comparisons: DynamoType's `<` is `cast_value <`, and a key attribute has one type), and
  the start key is converted once per query.
- Even so, every page of an index Query filtered and sorted the whole table and walked it up to
  the page's start key: O(table) per page, O(n^2 / page) for reading n rows back. An index
  Query with one equality on the index's hash key (the reconciliation's read-back) now keeps
  the matching items, sorted as moto sorts them, per table until the next DynamoDB action that
  is not a read (`_counted_call_action` counts them; a write during the sort discards it), and
  remembers where each page ended: the next page starts there after checking, with moto's own
  comparison, that the items either side of that position lie either side of the start key.
  The page itself is cut by moto's loop, copied here (`_index_query`). O(page) per page.

Run as `python -m localcloud.emulators.moto_server -H HOST -p PORT` (the arguments of
`moto.server`).
With `LOCALCLOUD_MOTO_THREADED=0` it serves one request at a time: moto's work is pure Python
under one interpreter lock, so its threads only add lock hand-offs (measured: ~20 % of its CPU
under the pipeline's concurrent calls). The benchmark uses that mode; everything else keeps
moto's default threaded server, which long polls need.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from enum import Enum
from types import SimpleNamespace
from typing import Any, cast

from boto3.dynamodb.types import DYNAMODB_CONTEXT
from moto import settings as moto_settings
from moto.awslambda.models import EventSourceMapping, LambdaBackend
from moto.core.responses import ActionContext, ActionResult
from moto.core.serialize import JSONSerializer
from moto.dynamodb.models import table as dynamodb_table
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, SecondaryIndex, Table
from moto.dynamodb.responses import DynamoHandler, DynamoResult
from moto.events.models import Rule
from moto.kinesis.models import Shard

_original_get_records = Shard.get_records
_original_max = Shard.get_max_sequence_number
_original_min = Shard.get_min_sequence_number
_original_put_record = Shard.put_record
_shard_lock = threading.RLock()
_original_send_to_targets = Rule.send_to_targets
_original_create_mapping = LambdaBackend.create_event_source_mapping
_original_execute_result = DynamoResult.execute_result
_original_project = SecondaryIndex.project
_original_query = Table.query
_stock_copy = dynamodb_table.copy
_original_size = DynamoType.size
_original_all_items = Table.all_items
_original_sorted_items = Table.sorted_items
_original_comes_before = Table._item_comes_before_dct
_original_call_action = DynamoHandler.call_action


def _create_event_source_mapping(self: LambdaBackend, spec: dict[str, Any]) -> EventSourceMapping:
    """Record the mapping, but never run it: moto would invoke the function itself (in Docker,
    which is absent) on every SendMessage/PutRecords, consuming and failing the records. The
    local cloud's drivers are the Lambda service; they read the mapping back and run it."""
    from moto.kinesis.models import kinesis_backends
    from moto.sqs.models import sqs_backends

    mapping = _original_create_mapping(self, spec)
    sources = [
        *sqs_backends[self.account_id][self.region_name].queues.values(),
        *kinesis_backends[self.account_id][self.region_name].streams.values(),
    ]
    for source in sources:
        registry = source.lambda_event_source_mappings  # type: ignore[attr-defined]
        for key in [key for key, value in registry.items() if value is mapping]:
            del registry[key]
    return mapping


def _send_to_targets(self: Rule, *args: Any, **kwargs: Any) -> None:
    """A schedule rule (no event pattern) matches no put event, as on AWS; moto matches it to
    every event and then fails on its Lambda target (`NotImplementedError`)."""
    if self.scheduled_expression and not self.event_pattern._raw_pattern:
        return
    _original_send_to_targets(self, *args, **kwargs)


def _locked_put_record(self: Shard, *args: Any, **kwargs: Any) -> str:
    with _shard_lock:
        return _original_put_record(self, *args, **kwargs)


def _max_sequence_number(self: Shard) -> int:
    return next(reversed(self.records)) if self.records else 0


def _min_sequence_number(self: Shard) -> int:
    return next(iter(self.records)) if self.records else 0


def _get_records(
    self: Shard, last_sequence_id: str, limit: int | None
) -> tuple[list[Any], int, int]:
    """Same answer as moto's `Shard.get_records`, found by position instead of a scan."""
    with _shard_lock:
        return _get_records_unlocked(self, last_sequence_id, limit)


def _get_records_unlocked(
    self: Shard, last_sequence_id: str, limit: int | None
) -> tuple[list[Any], int, int]:
    records = self.records
    if not records:
        return _original_get_records(self, last_sequence_id, limit)
    first, newest = next(iter(records)), next(reversed(records))
    if newest - first + 1 != len(records):  # not consecutive: keep moto's own walk
        return _original_get_records(self, last_sequence_id, limit)
    last = int(last_sequence_id)
    start = max(last + 1, first)
    stop = newest if not limit else min(newest, start + limit - 1)
    results = [records[number] for number in range(start, stop + 1)]
    if not results:
        return [], last, 0
    behind_s = records[newest].created_at - results[-1].created_at
    return results, results[-1].sequence_number, int(behind_s * 1000)


# The members of botocore's AttributeValue shape, in the order moto's serializer writes them.
_ATTRIBUTE_VALUE_MEMBERS = ("S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL")
# Where each read operation's result holds items: (key, depth of nesting above the item maps).
_ITEM_PATHS = {"Query": ("Items", 1), "Scan": ("Items", 1), "GetItem": ("Item", 0)}
_BATCH_GET = "BatchGetItem"


def _wire_string(value: Any) -> Any:
    """moto's JSON serializer for a string shape."""
    if type(value) is str:
        return value
    if isinstance(value, Enum):
        value = value.value
    return str(value) if value not in [None, {}, []] else value


def _wire_blob(value: Any) -> str:
    """moto's JSON serializer for a blob shape: base64."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return base64.b64encode(value).strip().decode("utf-8")


def _wire_attribute_value(value: Any) -> Any:
    """One AttributeValue (as `dynamo_to_dict` leaves it) in the JSON moto's serializer writes."""
    if value is None:
        return None
    if len(value) == 1:
        ((kind, inner),) = value.items()
        members: Any = ((kind, inner),) if kind in _ATTRIBUTE_VALUE_MEMBERS else ()
    else:
        members = ((kind, value[kind]) for kind in _ATTRIBUTE_VALUE_MEMBERS if kind in value)
    wired: dict[str, Any] = {}
    for kind, inner in members:
        if inner is None:
            continue
        if kind == "S" or kind == "N":
            wired[kind] = _wire_string(inner)
        elif kind == "M":
            wired[kind] = _wire_attribute_map(inner)
        elif kind == "L":
            wired[kind] = [_wire_list_member(member) for member in inner]
        elif kind == "SS" or kind == "NS":
            wired[kind] = [_wire_string(member) for member in inner]
        elif kind == "B":
            wired[kind] = _wire_blob(inner)
        elif kind == "BS":
            wired[kind] = [_wire_blob(member) for member in inner]
        else:  # NULL, BOOL: booleans are written as they are
            wired[kind] = inner
    return wired


def _wire_list_member(member: Any) -> Any:
    return member if member is None else _wire_attribute_value(member)


def _wire_attribute_map(attributes: dict[str, Any]) -> dict[str, Any]:
    """A map of AttributeValues; like moto's serializer, a None value leaves its key out."""
    return {
        name: _wire_attribute_value(value)
        for name, value in attributes.items()
        if value is not None
    }


def _dynamo_execute_result(self: DynamoResult, context: ActionContext) -> Any:
    """moto's serializer for everything but the items, which are written directly (the
    serializer's per-member key lookups are most of moto's time per row)."""
    result = self.result
    name = context.operation_model.name
    if (
        context.serializer_class is not JSONSerializer
        or not isinstance(result, dict)
        or (name not in _ITEM_PATHS and name != _BATCH_GET)
    ):
        return _original_execute_result(self, context)
    skeleton = dict(result)
    items: dict[str, Any] = {}
    if name == _BATCH_GET:
        responses = result.get("Responses")
        if isinstance(responses, dict):
            items = {table: maps for table, maps in responses.items() if isinstance(maps, list)}
            skeleton["Responses"] = {
                table: [] if table in items else maps for table, maps in responses.items()
            }
    else:
        key, depth = _ITEM_PATHS[name]
        found = result.get(key)
        if isinstance(found, list if depth else dict):
            items = {key: found}
            skeleton[key] = [] if depth else {}
    status, headers, body = ActionResult(skeleton).execute_result(context)
    if not items:
        return status, headers, body
    document = json.loads(body)
    target = document["Responses"] if name == _BATCH_GET else document
    for key, found in items.items():
        if isinstance(found, list):
            target[key] = [
                _wire_attribute_map(item) if isinstance(item, dict) else item for item in found
            ]
        else:
            target[key] = _wire_attribute_map(found)
    indent = 4 if moto_settings.PRETTIFY_RESPONSES else None
    return status, headers, json.dumps(document, indent=indent)


_LIST_EXPRESSION = re.compile(r"(.+)\[(\d+)\]$")


def _keeps_value(value: Any) -> bool:
    """Whether moto's projection round trip (DynamoDB JSON -> Python -> DynamoDB JSON) gives
    this value back unchanged, so the projected item can share it."""
    kind = value.type
    if kind == "S":
        return type(value.value) is str
    if kind == "BOOL":
        return type(value.value) is bool
    if kind == "N" and type(value.value) is str:
        try:
            return str(DYNAMODB_CONTEXT.create_decimal(value.value)) == value.value
        except ArithmeticError:
            return False
    return False


def _index_attributes(index: SecondaryIndex) -> list[str] | None:
    """The attributes a KEYS_ONLY / INCLUDE index keeps, in moto's order; None for ALL."""
    projection_type = (index.projection or {}).get("ProjectionType")
    if projection_type not in ("KEYS_ONLY", "INCLUDE"):
        return None
    names = index.table_key_attrs + [key["AttributeName"] for key in index.schema]
    if projection_type == "INCLUDE":
        names = names + list(index.projection.get("NonKeyAttributes", []))
    return names


def _project(self: SecondaryIndex, item: Item) -> Item:
    """Same item as moto's `SecondaryIndex.project`, without its round trip when the kept
    values would come back unchanged from it."""
    names = _index_attributes(self)
    if names is None or any(_LIST_EXPRESSION.match(name) for name in names):
        return _original_project(self, item)
    attrs = item.attrs
    kept = {name: attrs[name] for name in dict.fromkeys(names) if name in attrs}
    if not all(_keeps_value(value) for value in kept.values()):
        return _original_project(self, item)
    projected = cast(Item, Item.__new__(Item))  # moto's own copy does the same
    projected.hash_key = item.hash_key
    projected.range_key = item.range_key
    projected.attrs = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.update(projected.attrs, kept)  # a part of a stored item: within the size limit
    return projected


def _value_size(self: DynamoType) -> int:
    """moto's `DynamoType.size` (the 1 MB page limit counts it twice per row), without its chain
    of type tests for the common scalar kinds."""
    kind, value = self.type, self.value
    if kind == "S" and type(value) is str:
        return len(value.encode("utf-8"))
    if kind == "N":
        return len(str(value))
    return _original_size(self)


def _cast(value: Any) -> Any:
    """What moto's DynamoType compares by (`__lt__` is `cast_value <`); None stays None."""
    return value.cast_value if isinstance(value, DynamoType) else value


def _all_items(self: Table) -> list[Item]:
    """moto's `Table.all_items` (every item, sorted by key), comparing each key's cast value,
    computed once per item, instead of casting both sides of every comparison."""
    items: list[Item] = []
    for hash_set in self.items.values():
        if self.range_key_attr:
            items.extend(hash_set.values())
        else:
            items.append(hash_set)  # type: ignore[arg-type]
    return sorted(
        items,
        key=lambda x: (_cast(x.hash_key), _cast(x.range_key)) if x.range_key else _cast(x.hash_key),
    )


def _sorted_items(
    self: Table, hash_key_attrs: list[str], range_key_attrs: list[str | None], items: list[Item]
) -> list[Item]:
    """moto's `Table.sorted_items`, by cast values computed once per item."""
    attrs_to_sort_by = self._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs)
    items.sort(key=lambda x: tuple([_cast(x.attrs[key]) for key in attrs_to_sort_by]))
    return items


_start_key = threading.local()


def _item_comes_before_dct(
    self: Table,
    item: Item,
    dct: dict[str, Any],
    hash_key_attrs: list[str],
    range_key_attrs: list[str | None],
    scan_index_forward: bool,
) -> bool:
    """moto's `Table._item_comes_before_dct` (called for every item before the page's start
    key), with the start key's values converted once per query rather than per item."""
    attrs_to_sort_by = self._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs)
    cached: tuple[dict[str, Any], dict[str, DynamoType]] | None = getattr(
        _start_key, "cached", None
    )
    if cached is None or cached[0] is not dct:
        cached = (dct, {})
        _start_key.cached = cached  # holds dct: its id is not reused while cached
    converted = cached[1]
    for attr in attrs_to_sort_by:
        if attr in item.attrs:
            if attr not in converted:
                converted[attr] = DynamoType(dct.get(attr))  # type: ignore[arg-type]
            if item.attrs[attr] != converted[attr]:
                return (item.attrs[attr] < converted[attr]) == scan_index_forward
    return True


_projecting_query = threading.local()


def _argument(args: tuple[Any, ...], position: int) -> Any:
    """A positional argument of `Table.query` (after self), None when not passed."""
    return args[position] if len(args) > position else None


def _deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """`copy.deepcopy` for moto's table module, except for the results of an index query that
    projects (each result is then a new item built by `_project`, so copying first is waste)."""
    if getattr(_projecting_query, "active", False) and isinstance(value, list):
        _projecting_query.active = False
        return list(value)
    return _stock_copy.deepcopy(value, memo)


_QUERY_ARGUMENTS = (
    "hash_key",
    "range_comparison",
    "range_objs",
    "limit",
    "exclusive_start_key",
    "scan_index_forward",
    "projection_expressions",
    "index_name",
    "consistent_read",
    "filter_expression",
)


def _fast_index_query(
    self: Table, index: SecondaryIndex, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[list[Item], int, dict[str, Any] | None] | None:
    """`_index_query` when the query is of the shape it answers; None for moto's own path
    (several hash or range keys, filters of the legacy API, requests moto refuses)."""
    named = {name: _argument(args, position) for position, name in enumerate(_QUERY_ARGUMENTS)}
    named.update(kwargs)
    hash_conditions = named.pop("hash_key_conditions", None)
    range_conditions = named.pop("range_key_conditions", None)
    if set(named) - set(_QUERY_ARGUMENTS):  # filter_kwargs of the legacy API
        return None
    hash_keys = [key["AttributeName"] for key in index.schema if key["KeyType"] == "HASH"]
    range_keys = [key for key in index.schema if key["KeyType"] == "RANGE"]
    if (
        len(hash_keys) != 1
        or len(range_keys) > 1
        or not hash_conditions
        or len(hash_conditions) != 1
        or hash_conditions[0][0] != hash_keys[0]
        or (range_conditions and len(range_conditions) > 1)
        or (named["range_comparison"] and not range_keys)
        or (named["consistent_read"] and index in self.global_indexes)
    ):
        return None
    return _index_query(
        self,
        index,
        hash_keys[0],
        hash_conditions[0][1],
        named["range_comparison"],
        named["range_objs"] or [],
        named["limit"],
        named["exclusive_start_key"],
        named["scan_index_forward"],
        named["projection_expressions"],
        named["filter_expression"],
        range_conditions[-1][0] if range_conditions else None,
    )


def _query(self: Table, *args: Any, **kwargs: Any) -> Any:
    """moto's `Table.query`; an index query by its hash key is answered from cached rows
    (`_index_query`); otherwise the copy of the results is skipped where the index projects."""
    index_name = kwargs["index_name"] if "index_name" in kwargs else _argument(args, 7)
    indexes = {index.name: index for index in self.all_indexes()} if index_name else {}
    index = indexes.get(index_name) if index_name else None
    if index is not None:
        fast = _fast_index_query(self, index, args, kwargs)
        if fast is not None:
            return fast
    _projecting_query.active = index is not None and _index_attributes(index) is not None
    try:
        return _original_query(self, *args, **kwargs)
    finally:
        _projecting_query.active = False


_READ_ACTIONS: frozenset[str] = frozenset(
    {
        "BatchGetItem",
        "DescribeContinuousBackups",
        "DescribeEndpoints",
        "DescribeLimits",
        "DescribeTable",
        "DescribeTimeToLive",
        "GetItem",
        "ListTables",
        "ListTagsOfResource",
        "Query",
        "Scan",
    }
)
"""DynamoDB actions that change no item: every other action invalidates the cached index
queries (a conservative list: an action missing here only costs a cache refill)."""
_writes = itertools.count()
_writes_seen = [0]
"""How many non-read actions began or ended: the cached index queries are valid while it is
unchanged. `next()` on a count is atomic under the interpreter lock."""


def _counted_call_action(self: DynamoHandler) -> Any:
    """moto's `DynamoHandler.call_action`, counting the actions that may change items: before
    (a query sorting meanwhile keeps nothing) and after (nothing cached during it survives)."""
    if self._get_action() in _READ_ACTIONS:
        return _original_call_action(self)
    _writes_seen[0] = next(_writes)
    try:
        return _original_call_action(self)
    finally:
        _writes_seen[0] = next(_writes)


_CACHE_ATTRIBUTE = "_localcloud_index_rows"


@dataclass
class _IndexRows:
    """One index Query's matching items in moto's order, valid for one count of writes."""

    writes: int
    items: list[Item]
    next_start: dict[str, int] = field(default_factory=dict)
    """Canonical last evaluated key -> where the page after it starts in `items`."""


def _canonical_key(key: dict[str, Any]) -> str:
    """A last evaluated key as the next request presents it (DynamoDB JSON), as text."""
    wire = {
        name: value.to_json() if isinstance(value, DynamoType) else value
        for name, value in key.items()
    }
    return json.dumps(wire, sort_keys=True, default=repr)


def _index_rows(
    table: Table,
    index: SecondaryIndex,
    hash_attr: str,
    hash_value: DynamoType,
    range_attrs: list[str],
    sort_attrs: tuple[list[str], list[str | None]],
    forward: bool,
) -> _IndexRows:
    """The items of `table` whose `hash_attr` is `hash_value` (and that have the index's range
    keys), sorted as moto's `Table.query` sorts them; cached until the next write."""
    writes = _writes_seen[0]
    cache: dict[tuple[Any, ...], _IndexRows] = table.__dict__.setdefault(
        "_localcloud_index_rows", {}
    )
    cache_key = (index.name, hash_attr, hash_value.type, str(hash_value.value), forward)
    cached = cache.get(cache_key)
    if cached is not None and cached.writes == writes:
        return cached
    found = []
    for item in table.all_items():
        if not isinstance(item, Item):
            continue
        value = item.attrs.get(hash_attr)
        if not value or value != hash_value:
            continue
        if range_attrs and not all(item.attrs.get(name) for name in range_attrs):
            continue
        found.append(item)
    found = table.sorted_items(sort_attrs[0], sort_attrs[1], found)
    if not forward:
        found.reverse()
    rows = _IndexRows(writes, found)
    if _writes_seen[0] == writes:  # no write began or ended meanwhile
        cache[cache_key] = rows
    return rows


def _page_start(
    table: Table,
    rows: _IndexRows,
    start_key: dict[str, Any] | None,
    sort_attrs: tuple[list[str], list[str | None]],
    forward: bool,
) -> int:
    """Where moto's walk past the items before `start_key` stops: the position the previous
    page remembered when moto's comparison confirms it, else found by moto's walk."""
    if start_key is None:
        return 0
    items = rows.items

    def before(position: int) -> bool:
        return table._item_comes_before_dct(
            items[position], start_key, sort_attrs[0], sort_attrs[1], forward
        )

    remembered = rows.next_start.get(_canonical_key(start_key))
    if (
        remembered is not None
        and 0 < remembered <= len(items)
        and before(remembered - 1)
        and (remembered == len(items) or not before(remembered))
    ):
        return remembered
    position = 0
    while position < len(items) and before(position):
        position += 1
    return position


def _index_query(
    self: Table,
    index: SecondaryIndex,
    hash_attr: str,
    hash_value: DynamoType,
    range_comparison: str | None,
    range_objs: list[DynamoType],
    limit: int | None,
    exclusive_start_key: dict[str, Any] | None,
    scan_index_forward: bool,
    projection_expressions: list[list[str]] | None,
    filter_expression: Any,
    range_key_name: str | None,
) -> tuple[list[Item], int, dict[str, Any] | None]:
    """moto's `Table.query` for an index with one hash key and at most one range key, queried
    by an equality on the hash key: the same page, cut the same way, from the cached rows."""
    index_range_keys = [key["AttributeName"] for key in index.schema if key["KeyType"] == "RANGE"]
    if index_range_keys:
        range_attrs: list[str | None] = [*index_range_keys, self.range_key_attr]
        index_range_key: str | None = index_range_keys[0]
    else:
        index_range_key = self.range_key_attr or self.hash_key_attr
        range_attrs = [index_range_key, self.range_key_attr]
    sort_attrs = ([hash_attr, self.hash_key_attr], range_attrs)
    rows = _index_rows(
        self, index, hash_attr, hash_value, index_range_keys, sort_attrs, scan_index_forward
    )
    start = _page_start(self, rows, exclusive_start_key, sort_attrs, scan_index_forward)
    compared = range_key_name or index_range_key
    results: list[Item] = []
    result_size = 0
    scanned_count = 0
    last_evaluated_key = None
    last_taken = start - 1
    for position in range(start, len(rows.items)):
        result = rows.items[position]
        if len(results) == limit or (result_size + result.size()) > RESULT_SIZE_LIMIT:
            last_evaluated_key = self._get_last_evaluated_key(results[-1], index.name)
            rows.next_start[_canonical_key(last_evaluated_key)] = last_taken + 1
            break
        if not range_comparison:
            taken = True
        else:
            value = result.attrs.get(compared) if compared else None
            taken = bool(value) and value.compare(range_comparison, range_objs)  # type: ignore[union-attr]
        if taken:
            results.append(result)
            result_size += result.size()
            scanned_count += 1
            last_taken = position
    if _index_attributes(index) is None:
        results = _stock_copy.deepcopy(results)
    results = [index.project(result) for result in results]
    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if projection_expressions:
        results = [result.project(projection_expressions) for result in results]
    return results, scanned_count, last_evaluated_key


def apply() -> None:
    """Patch moto's Kinesis shard and DynamoDB read path in this process."""
    Shard.get_max_sequence_number = _max_sequence_number  # type: ignore[method-assign]
    Shard.get_min_sequence_number = _min_sequence_number  # type: ignore[method-assign]
    Shard.get_records = _get_records  # type: ignore[method-assign]
    Shard.put_record = _locked_put_record  # type: ignore[method-assign]
    Rule.send_to_targets = _send_to_targets  # type: ignore[method-assign]
    LambdaBackend.create_event_source_mapping = _create_event_source_mapping  # type: ignore[method-assign]
    DynamoResult.execute_result = _dynamo_execute_result  # type: ignore[method-assign,assignment]
    SecondaryIndex.project = _project  # type: ignore[method-assign]
    Table.query = _query  # type: ignore[method-assign]
    DynamoType.size = _value_size  # type: ignore[method-assign]
    Table.all_items = _all_items  # type: ignore[method-assign]
    Table.sorted_items = _sorted_items  # type: ignore[method-assign]
    Table._item_comes_before_dct = _item_comes_before_dct  # type: ignore[method-assign]
    DynamoHandler.call_action = _counted_call_action  # type: ignore[method-assign]
    dynamodb_table.copy = SimpleNamespace(  # type: ignore[assignment]
        copy=_stock_copy.copy, deepcopy=_deepcopy
    )


def main(argv: list[str] | None = None) -> None:
    apply()
    import moto.server

    if os.environ.get("LOCALCLOUD_MOTO_THREADED", "1") == "0":
        serve = moto.server.run_simple

        def run_single_threaded(*args: Any, **kwargs: Any) -> None:
            serve(*args, **{**kwargs, "threaded": False})

        moto.server.run_simple = run_single_threaded
    moto.server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
