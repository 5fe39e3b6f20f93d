"""Put a set of DynamoDB tables back as they were: for tests that share one local cloud's run
and change its rows, its ledger or its runs table to provoke a failure.

A test that changes shared state restores it itself, whatever it asserts and however it ends,
so the other tests of its module see the run the module built, in any order. The tables of a
test's cloud hold a few hundred items: a full scan before and after costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

Item = dict[str, Any]


def _key(item: Item, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(repr(item[name]) for name in names)


def _scan(client: Any, table: str) -> list[Item]:
    return [
        item
        for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        for item in page["Items"]
    ]


@contextmanager
def restored_tables(client: Any, prefix: str) -> Iterator[None]:
    """On exit, every table whose name starts with `prefix` holds exactly the items it held on
    entry: items added since are deleted, changed or deleted ones are put back."""
    tables = [
        name
        for page in client.get_paginator("list_tables").paginate()
        for name in page["TableNames"]
        if name.startswith(prefix)
    ]
    keys = {
        table: [
            k["AttributeName"] for k in client.describe_table(TableName=table)["Table"]["KeySchema"]
        ]
        for table in tables
    }
    before = {
        table: {_key(item, keys[table]): item for item in _scan(client, table)} for table in tables
    }
    try:
        yield
    finally:
        for table in tables:
            now = {_key(item, keys[table]): item for item in _scan(client, table)}
            for key, item in now.items():
                if key not in before[table]:
                    client.delete_item(
                        TableName=table, Key={name: item[name] for name in keys[table]}
                    )
            for key, item in before[table].items():
                if now.get(key) != item:
                    client.put_item(TableName=table, Item=item)
