"""Pydantic models of the MooVitamix resources and of the stream envelope.

The models validate but never rewrite: timestamps stay the exact strings the API served
(so the stores hold what was served, to the character), and are parsed only to compare
versions (`version_of`). One place knows each resource's key, so the producer's partition
key, the sinks' primary keys and the dumps all agree.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)

SCHEMA_VERSION: Final = 1
"""Version of the envelope format; bump it when the envelope changes shape."""

_DURATION = re.compile(r"[0-9]{1,3}:[0-5][0-9]")
"""Matched with `fullmatch` and ASCII digits: `$` would accept a trailing newline, and `\\d`
any Unicode digit (fullwidth, Arabic-Indic...), which no consumer parses as minutes."""
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?"
)
"""What `isoformat()` prints (fraction optional, zone tolerated). `fromisoformat` alone also
takes date-only, week (`2025-W28-7`) and basic (`20250713T014715`) forms that are not the
contract's timestamps, and silently truncates a fraction past 6 digits, which would make two
different versions compare equal."""


def parse_timestamp(value: str) -> datetime:
    """Parse an API timestamp to a naive UTC datetime, for comparisons only.

    The contract says timestamps are naive ISO 8601 with or without a fraction; a server that
    adds a zone is tolerated by converting to UTC, so versions stay comparable.
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _check_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text contains a NUL character, which PostgreSQL text cannot store")
    return value


def _check_timestamp(value: str) -> str:
    if not _TIMESTAMP.fullmatch(value):
        raise ValueError(
            f"timestamp must look like 2025-07-13T01:47:15[.825923], got {value[:40]!r}"
        )
    try:
        parse_timestamp(value)  # raises ValueError, which pydantic reports with the field name
    except OverflowError as error:  # e.g. 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
        raise ValueError(f"timestamp {value[:40]!r} is out of range in UTC: {error}") from error
    return value


def _check_duration(value: str) -> str:
    if not _DURATION.fullmatch(value):
        raise ValueError(f"duration must look like MM:SS, got {value[:40]!r}")
    return value


Text = Annotated[StrictStr, AfterValidator(_check_text)]
Timestamp = Annotated[StrictStr, AfterValidator(_check_timestamp)]
Duration = Annotated[StrictStr, AfterValidator(_check_duration)]
EntityId = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
"""Ids fit a signed 64-bit integer: PostgreSQL bigint, DynamoDB numbers, orjson."""


class _Resource(BaseModel):
    """Common settings: unknown fields are ignored, known ones are type-checked strictly."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    created_at: Timestamp
    updated_at: Timestamp


class Track(_Resource):
    id: EntityId
    name: Text
    artist: Text
    songwriters: Text
    duration: Duration
    genres: Text
    album: Text


class User(_Resource):
    id: EntityId
    first_name: Text
    last_name: Text
    email: Text
    gender: Text
    favorite_genres: Text


class ListenHistory(_Resource):
    user_id: EntityId
    items: list[EntityId]


Resource = Track | User | ListenHistory
EntityName = Literal["users", "tracks", "listen_history"]

ENTITIES: Final[tuple[EntityName, ...]] = ("users", "tracks", "listen_history")
MODELS: Final[dict[str, type[Resource]]] = {
    "users": User,
    "tracks": Track,
    "listen_history": ListenHistory,
}


def entity_key(entity: str, item: dict[str, Any]) -> tuple[int] | tuple[int, str]:
    """The primary key of an item: `(id,)`, or `(user_id, created_at)` for listen history."""
    if entity == "listen_history":
        return (item["user_id"], item["created_at"])
    return (item["id"],)


def partition_key(entity: str, item: dict[str, Any]) -> str:
    """Kinesis partition key `<entity>:<key>`: all versions of one entity share a shard."""
    return ":".join([entity, *(str(part) for part in entity_key(entity, item))])


def version_of(item: dict[str, Any]) -> datetime:
    """The version used by newest-wins: the parsed `updated_at`."""
    return parse_timestamp(item["updated_at"])


def describe_validation_error(error: ValidationError) -> str:
    """A one-line quarantine reason naming the first few offending fields."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or '<root>'}: {problem['msg']}"
        for problem in error.errors()[:5]
    )
    return f"breaks the contract: {problems}"


def validate_item(entity: str, item: Any) -> dict[str, Any]:
    """Validate one API item; return it as a plain dict of the contract's fields.

    Raises `pydantic.ValidationError` (a `ValueError`) when the item breaks the contract, and
    `KeyError` for an unknown entity.
    """
    model = MODELS[entity].model_validate(item)
    return model.model_dump()


class Envelope(BaseModel):
    """One stream record: what it holds, where it comes from, and when it was fetched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    entity: EntityName
    run_id: StrictStr
    fetched_at: StrictStr
    item: dict[str, Any]
    page: StrictStr | None = None
    """Optional (same schema version): `<run_id>/<entity>/p<N>`, the page the item came from."""
