"""moto's DynamoDB Query, sorted once per item and paged in O(page) (identical answers).

Two costs of moto's Query, each replaced by an equivalent (identical answers, checked against
stock moto by property tests in tests/integration/test_moto_server.py):
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
  The page itself is cut by moto's loop, copied here (`_index_query`). O(page) per page. The
  matching items are sorted once, by moto's key (which includes the table's own key), without
  moto's sort of the whole table first.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from moto.dynamodb.models import table as dynamodb_table
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, SecondaryIndex, Table
from moto.dynamodb.responses import DynamoHandler

from localcloud.emulators.moto_dynamodb_wire import index_attributes

_original_query = Table.query
_stock_copy = dynamodb_table.copy
_original_all_items = Table.all_items
_original_sorted_items = Table.sorted_items
_original_comes_before = Table._item_comes_before_dct
_original_call_action = DynamoHandler.call_action


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


def _unsorted_items(table: Table) -> Iterator[Item]:
    """Every item of `table`, in no particular order: `all_items` without its sort, for a
    caller that sorts by a key that includes the table's own key (so the order before does
    not matter)."""
    for hash_set in table.items.values():
        if table.range_key_attr:
            yield from hash_set.values()
        else:
            yield hash_set  # type: ignore[misc]


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
    _projecting_query.active = index is not None and index_attributes(index) is not None
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
    for item in _unsorted_items(table):  # sorted below by a key unique per item
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
        size = result.size()
        if len(results) == limit or (result_size + size) > RESULT_SIZE_LIMIT:
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
            result_size += size
            scanned_count += 1
            last_taken = position
    if index_attributes(index) is None:
        results = _stock_copy.deepcopy(results)
    results = [index.project(result) for result in results]
    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if projection_expressions:
        results = [result.project(projection_expressions) for result in results]
    return results, scanned_count, last_evaluated_key


def apply() -> None:
    """Patch moto's DynamoDB Query path in this process."""
    Table.query = _query  # type: ignore[method-assign]
    Table.all_items = _all_items  # type: ignore[method-assign]
    Table.sorted_items = _sorted_items  # type: ignore[method-assign]
    Table._item_comes_before_dct = _item_comes_before_dct  # type: ignore[method-assign]
    DynamoHandler.call_action = _counted_call_action  # type: ignore[method-assign]
    dynamodb_table.copy = SimpleNamespace(  # type: ignore[assignment]
        copy=_stock_copy.copy, deepcopy=_deepcopy
    )
