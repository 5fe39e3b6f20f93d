"""moto's DynamoDB answers, written without its per-row overheads (identical bytes).

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
  is skipped (only in that query). A ProjectionExpression of top-level names (`Item.project`)
  keeps such values the same way.
- Per row, moto converts each item of a page to plain JSON twice (`dynamo_to_dict`, then the
  serializer's walk); an item of plain scalars (S and N strings, BOOL) is converted here in one
  pass. The size of an item or value (the 1 MB page limit) is computed without moto's chain of
  type tests.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from enum import Enum
from typing import Any, cast

from boto3.dynamodb.types import DYNAMODB_CONTEXT
from moto import settings as moto_settings
from moto.core.responses import ActionContext, ActionResult
from moto.core.serialize import JSONSerializer
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import SecondaryIndex
from moto.dynamodb.models.utilities import bytesize, dynamo_to_dict
from moto.dynamodb.responses import DynamoResult

_original_execute_result = DynamoResult.execute_result
_original_result_init = DynamoResult.__init__
_original_project = SecondaryIndex.project
_original_size = DynamoType.size
_original_item_project = Item.project
_original_item_size = Item.size


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


class _Wired(dict[str, Any]):
    """An item already in the JSON moto's serializer writes (built from plain scalars)."""


_PLAIN_SCALARS = {"S": str, "N": str, "BOOL": bool}


def _plain_item(attributes: Any) -> _Wired | None:
    """An item of S / N strings and BOOLs as its wire JSON in one pass, what `dynamo_to_dict`
    then `_wire_attribute_map` make of it; None for any other item (they take moto's path)."""
    if not isinstance(attributes, dict):
        return None
    values = attributes.values()
    if not all(
        type(value) is DynamoType and _PLAIN_SCALARS.get(value.type) is type(value.value)
        for value in values
    ):
        return None
    return _Wired({name: {value.type: value.value} for name, value in attributes.items()})


def _converted_items(items: Any) -> Any:
    """A list of items with each plain one converted directly, the others by moto."""
    if not isinstance(items, list):
        return dynamo_to_dict(items)
    return [
        wired if (wired := _plain_item(item)) is not None else dynamo_to_dict(item)
        for item in items
    ]


def _dynamo_result_init(self: DynamoResult, result: object) -> None:
    """moto's `DynamoResult.__init__` (`dynamo_to_dict` of the whole result), with the items of
    a Query or Scan page that hold only plain scalars converted in one pass."""
    if isinstance(result, dict) and isinstance(result.get("Items"), list):
        rest = dynamo_to_dict({key: value for key, value in result.items() if key != "Items"})
        rest["Items"] = _converted_items(result["Items"])
        transformed = {key: rest[key] for key in result}  # moto's key order
    else:
        transformed = dynamo_to_dict(result)
    ActionResult.__init__(self, transformed)


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
                item
                if type(item) is _Wired
                else _wire_attribute_map(item)
                if isinstance(item, dict)
                else item
                for item in found
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
        number = value.value
        if number.isascii() and number.isdigit() and len(number) <= 38 and number[0] != "0":
            return True  # a plain positive integer: already canonical
        try:
            return str(DYNAMODB_CONTEXT.create_decimal(value.value)) == value.value
        except ArithmeticError:
            return False
    return False


def index_attributes(index: SecondaryIndex) -> list[str] | None:
    """The attributes a KEYS_ONLY / INCLUDE index keeps, in moto's order; None for ALL."""
    projection_type = (index.projection or {}).get("ProjectionType")
    if projection_type not in ("KEYS_ONLY", "INCLUDE"):
        return None
    names = index.table_key_attrs + [key["AttributeName"] for key in index.schema]
    if projection_type == "INCLUDE":
        names = names + list(index.projection.get("NonKeyAttributes", []))
    return names


_PROJECTION_ATTRIBUTE = "_localcloud_projection"


def _kept_names(index: SecondaryIndex) -> list[str] | None:
    """`index_attributes`, remembered on the index (a DynamoDB index's projection never
    changes); None when moto's own projection must run (ALL, or a list expression)."""
    cached = index.__dict__.get(_PROJECTION_ATTRIBUTE)
    if cached is None or cached[0] is not index.projection:
        names = index_attributes(index)
        if names is not None and any(_LIST_EXPRESSION.match(name) for name in names):
            names = None
        cached = (index.projection, list(dict.fromkeys(names)) if names is not None else None)
        index.__dict__[_PROJECTION_ATTRIBUTE] = cached
    return cached[1]


def _project(self: SecondaryIndex, item: Item) -> Item:
    """Same item as moto's `SecondaryIndex.project`, without its round trip when the kept
    values would come back unchanged from it."""
    names = _kept_names(self)
    projected = _part_of(item, names) if names is not None else None
    return projected if projected is not None else _original_project(self, item)


def _part_of(item: Item, names: list[str]) -> Item | None:
    """A new item holding `item`'s values of `names` (those it has, in that order), shared
    with it; None when a value would not come back unchanged from moto's round trip."""
    attrs = item.attrs
    kept = {name: attrs[name] for name in names if name in attrs}
    if not all(_keeps_value(value) for value in kept.values()):
        return None
    projected = cast(Item, Item.__new__(Item))  # moto's own copy does the same
    projected.hash_key = item.hash_key
    projected.range_key = item.range_key
    projected.attrs = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.update(projected.attrs, kept)  # a part of a stored item: within the size limit
    return projected


_last_paths = threading.local()


def _top_level_names(paths: list[list[str]]) -> list[str] | None:
    """The attribute names of a projection that names only top-level attributes, else None;
    remembered for the last projection (a query projects every item of a page with the same)."""
    last = getattr(_last_paths, "value", None)
    if last is not None and last[0] is paths:
        return last[1]
    plain = all(len(path) == 1 and not _LIST_EXPRESSION.match(path[0]) for path in paths)
    names = [path[0] for path in paths] if plain else None
    _last_paths.value = (paths, names)  # holds `paths`: its id is not reused while remembered
    return names


def _item_project(self: Item, projection_expressions: list[list[str]]) -> Item:
    """Same item as moto's `Item.project`, without its round trip when every expression names
    a top-level attribute and the kept values would come back unchanged from it."""
    names = _top_level_names(projection_expressions)
    projected = _part_of(self, names) if names is not None else None
    if projected is None:
        return _original_item_project(self, projection_expressions)
    return projected


def _item_size(self: Item) -> int:
    """moto's `Item.size` (names and values in bytes), scalars sized inline."""
    total = 0
    for name, value in self.attrs.items():
        kind, inner = value.type, value.value
        named = len(name) if name.isascii() else len(name.encode("utf-8"))
        if kind == "S" and type(inner) is str:
            total += named + (len(inner) if inner.isascii() else len(inner.encode("utf-8")))
        elif kind == "N":
            total += named + len(str(inner))
        else:
            total += bytesize(name) + value.size()
    return total


def _value_size(self: DynamoType) -> int:
    """moto's `DynamoType.size` (the 1 MB page limit counts it twice per row), without its chain
    of type tests for the common scalar kinds."""
    kind, value = self.type, self.value
    if kind == "S" and type(value) is str:
        return len(value.encode("utf-8"))
    if kind == "N":
        return len(str(value))
    return _original_size(self)


def apply() -> None:
    """Patch how moto writes DynamoDB items, projects index items and sizes values."""
    DynamoResult.__init__ = _dynamo_result_init  # type: ignore[method-assign]
    DynamoResult.execute_result = _dynamo_execute_result  # type: ignore[method-assign,assignment]
    SecondaryIndex.project = _project  # type: ignore[method-assign]
    DynamoType.size = _value_size  # type: ignore[method-assign]
    Item.size = _item_size  # type: ignore[method-assign]
    Item.project = _item_project  # type: ignore[method-assign]
