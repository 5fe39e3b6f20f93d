"""The relational model of the PostgreSQL sink: each entity's table, its key as stored, and an
envelope's row (docs/schema.md).

A version is `(updated_at, fetched_at_utc)` (`chalicelib.model.contract.version_rank`).
Timestamps are stored as `timestamp`; one whose text `isoformat()` would not reproduce (another
spelling, a zone) keeps its served text in `timestamps_as_served`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from chalicelib.load.evidence import page_number
from chalicelib.load.sinks import newest_per_key
from chalicelib.model.contract import fetch_rank, parse_timestamp
from chalicelib.model.envelope import Envelope

StoredKey = tuple[int] | tuple[int, datetime]
TIMESTAMP_FIELDS = ("created_at", "updated_at")


@dataclass(frozen=True)
class Table:
    """How one entity maps to its table: key, API fields in served order, column types."""

    name: str
    key: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]  # (API field = column, PostgreSQL type), no timestamps
    has_placeholders: bool

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [
            *self.fields,
            ("created_at", "timestamp"),
            ("updated_at", "timestamp"),
            ("timestamps_as_served", "jsonb"),
            ("run_id", "text"),
            ("fetched_at", "text"),
            ("fetched_at_utc", "timestamp"),
            ("run_page", "integer"),
        ]


TABLES: dict[str, Table] = {
    "users": Table(
        "users",
        ("id",),
        (
            ("id", "bigint"),
            ("first_name", "text"),
            ("last_name", "text"),
            ("email", "text"),
            ("gender", "text"),
            ("favorite_genres", "text"),
        ),
        has_placeholders=True,
    ),
    "tracks": Table(
        "tracks",
        ("id",),
        (
            ("id", "bigint"),
            ("name", "text"),
            ("artist", "text"),
            ("songwriters", "text"),
            ("duration", "text"),
            ("genres", "text"),
            ("album", "text"),
        ),
        has_placeholders=True,
    ),
    "listen_history": Table(
        "listen_history",
        ("user_id", "created_at"),
        (("user_id", "bigint"),),
        has_placeholders=False,
    ),
}


def stored_key(entity: str, item: dict[str, Any]) -> StoredKey:
    """The primary key as the table holds it (a parsed `created_at` for listen history)."""
    if entity == "listen_history":
        return (item["user_id"], parse_timestamp(item["created_at"]))
    return (item["id"],)


def newest_per_stored_key(entity: str, envelopes: Sequence[Envelope]) -> dict[StoredKey, Envelope]:
    """The newest version (`version_rank`) of each stored key in a batch; on a full tie the
    first one stays.

    Keyed like the table (not like the served text), because one INSERT ... ON CONFLICT may
    not touch a row twice.
    """
    newest = newest_per_key(entity, envelopes, key_of=stored_key)
    return dict(sorted(newest.items()))  # type: ignore[arg-type]  # keys are StoredKeys


def timestamps_as_served(item: dict[str, Any]) -> str | None:
    """JSON of the timestamps that isoformat() of their value would not reproduce, or None."""
    odd = {
        name: item[name]
        for name in TIMESTAMP_FIELDS
        if parse_timestamp(item[name]).isoformat() != item[name]
    }
    return orjson.dumps(odd).decode() if odd else None


def row_values(table: Table, envelope: Envelope) -> list[Any]:
    """The values of `table.columns` for one envelope."""
    item = envelope.item
    return [
        *(item[name] for name, _ in table.fields),
        parse_timestamp(item["created_at"]),
        parse_timestamp(item["updated_at"]),
        timestamps_as_served(item),
        envelope.run_id,
        envelope.fetched_at,
        _fetched_at_utc(envelope.fetched_at),
        page_number(envelope.page),
    ]


def _fetched_at_utc(fetched_at: str) -> datetime | None:
    """The `fetched_at_utc` column: the fetch instant, NULL when `fetched_at` is not one."""
    instant = fetch_rank(fetched_at)
    return None if instant == datetime.min else instant


def column_values(table: Table, envelopes: Sequence[Envelope]) -> list[list[Any]]:
    """One list per column of `table.columns` (the floor of `python -m bench` uses them)."""
    columns: list[list[Any]] = [[] for _ in table.columns]
    for envelope in envelopes:
        for column, value in zip(columns, row_values(table, envelope), strict=True):
            column.append(value)
    return columns
