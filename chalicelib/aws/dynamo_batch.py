"""BatchWriteItem and BatchGetItem until DynamoDB has processed every item or key.

DynamoDB may leave part of a batch call unprocessed (throttling, a hot partition) and expects
the caller to send that part again, with backoff. Every batch call of the pipeline goes
through these two functions, so the retry rule is one rule.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

MAX_ATTEMPTS: Final = 10
"""Calls per batch while DynamoDB leaves part of it unprocessed."""


class Unprocessed(RuntimeError):
    """DynamoDB still left items or keys unprocessed after every attempt."""


def _backoff(attempt: int) -> float:
    """Full jitter, capped at 2 s: concurrent writers spread apart."""
    return random.uniform(0, min(2.0, 0.05 * 2**attempt))  # noqa: S311 - jitter


def write_all(
    client: Any,
    table: str,
    requests: Sequence[Mapping[str, Any]],
    *,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """One BatchWriteItem (<= 25 requests), resending what DynamoDB left unprocessed."""
    pending: list[Any] = list(requests)
    for attempt in range(attempts):
        if attempt:
            sleep(_backoff(attempt))
        response = client.batch_write_item(RequestItems={table: pending})
        pending = list(response.get("UnprocessedItems", {}).get(table, []))
        if not pending:
            return
    raise Unprocessed(f"{len(pending)} items still unprocessed by {table} after {attempts} calls")


def get_all(
    client: Any,
    table: str,
    keys: Sequence[Mapping[str, Any]],
    projection: Sequence[str] | None = None,
    *,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """One BatchGetItem (<= 100 keys), asking again for the keys DynamoDB left unprocessed;
    only the `projection` attributes when given."""
    request: dict[str, Any] = {}
    if projection is not None:
        names = {f"#a{index}": name for index, name in enumerate(projection)}
        request = {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
    pending: list[Any] = list(keys)
    rows: list[dict[str, Any]] = []
    for attempt in range(attempts):
        if attempt:
            sleep(_backoff(attempt))
        response = client.batch_get_item(RequestItems={table: {**request, "Keys": pending}})
        rows += response.get("Responses", {}).get(table, [])
        unprocessed = response.get("UnprocessedKeys", {}).get(table)
        pending = list(unprocessed["Keys"]) if unprocessed else []
        if not pending:
            return rows
    raise Unprocessed(f"{len(pending)} keys still unread in {table} after {attempts} calls")
