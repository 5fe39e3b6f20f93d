"""Pydantic models of the MooVitamix resources, their keys and their versions.

The models validate but never rewrite: timestamps stay the exact strings the API served
(so the stores hold what was served, to the character), and are parsed only to compare
versions (`version_rank`) and to build keys. One place knows each resource's key, so the
producer's partition key, the page ledger, the sinks' primary keys and the dumps all agree.

The version rule (docs/architecture.md, "Versions"):

* a version is `(updated_at, fetched_at)`, both as instants in UTC (a naive timestamp is UTC).
  The newest version wins in every sink; on an equal `updated_at` the later fetch wins, so a
  content that changed while its `updated_at` did not is still applied; on a full tie (the
  same record delivered again) the stored one stays, so re-delivery is a no-op;
* an `updated_at` more than `PIPELINE_MAX_FUTURE_S` seconds ahead of the validating clock
  breaks the contract: it is quarantined with that reason, so one bad timestamp can never
  freeze a row (it would win against every correction);
* a listen history's key is `(user_id, instant of created_at)`, the instant written as
  `YYYY-MM-DDTHH:MM:SS.ffffff` in UTC (`canonical_instant`): `...T10:00:00+02:00`,
  `...T08:00:00` and `...T08:00:00.000` are one key everywhere. The text as served is kept as
  data.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

if TYPE_CHECKING:
    from chalicelib.model.envelope import Envelope


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
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError as error:  # 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
            raise ValueError(f"timestamp {value[:40]!r} is out of range in UTC") from error
    return parsed


def canonical_instant(value: str) -> str:
    """The instant of a timestamp as `YYYY-MM-DDTHH:MM:SS.ffffff`, in UTC (naive = UTC).

    The form a key is built from: every spelling of one instant (zone, fraction digits) gives
    the same text, and the text sorts like the instant.
    """
    return parse_timestamp(value).isoformat(timespec="microseconds")


def _check_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text contains a NUL character, which PostgreSQL text cannot store")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"text contains a lone surrogate (U+{ord(value[error.start]):04X} at "
                f"character {error.start}), which is not valid UTF-8 and no store accepts"
            ) from None
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


DEFAULT_MAX_FUTURE_S: Final = 86_400
"""How far ahead of the clock an `updated_at` may be (`PIPELINE_MAX_FUTURE_S` overrides it):
a day covers clocks that disagree and local times mislabelled as UTC (at most 14 hours)."""


class _Resource(BaseModel):
    """Common settings: unknown fields are ignored (and reported as schema drift by the
    ingest), known ones are type-checked strictly."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    created_at: Timestamp
    updated_at: Timestamp

    @field_validator("updated_at")
    @classmethod
    def _not_in_the_future(cls, value: str, info: ValidationInfo) -> str:
        """A version from the future would win against every correction: refuse it."""
        limit = (info.context or {}).get("not_after")
        if limit is not None and parse_timestamp(value) > limit:
            raise ValueError(
                f"updated_at {value[:40]!r} is in the future (later than "
                f"{limit.isoformat(timespec='seconds')} UTC, now plus PIPELINE_MAX_FUTURE_S)"
            )
        return value


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
    """The primary key of an item: `(id,)`, or `(user_id, canonical created_at)` for listen
    history (`canonical_instant`: one key per instant, whatever its spelling)."""
    if entity == "listen_history":
        return (item["user_id"], canonical_instant(item["created_at"]))
    return (item["id"],)


def partition_key(entity: str, item: dict[str, Any]) -> str:
    """Kinesis partition key `<entity>:<key>`: all versions of one entity share a shard."""
    return ":".join([entity, *(str(part) for part in entity_key(entity, item))])


def legacy_partition_key(entity: str, item: dict[str, Any]) -> str:
    """The partition key ingests before the canonical key used (the served `created_at`);
    accepted from records still in the stream when the load is upgraded."""
    if entity == "listen_history":
        return f"{entity}:{item['user_id']}:{item['created_at']}"
    return partition_key(entity, item)


def version_of(item: dict[str, Any]) -> datetime:
    """The item's own version: the parsed `updated_at` (the first half of `version_rank`)."""
    return parse_timestamp(item["updated_at"])


def fetch_rank(fetched_at: str) -> datetime:
    """`fetched_at` as a naive UTC datetime (a naive value is UTC); `datetime.min` when it is
    not a timestamp (then any real fetch is later)."""
    try:
        return parse_timestamp(fetched_at)
    except (ValueError, TypeError):
        return datetime.min


def version_rank(envelope: Envelope) -> tuple[datetime, datetime]:
    """What newest-wins compares: `(updated_at, fetched_at)`; the later fetch wins a tie."""
    return (version_of(envelope.item), fetch_rank(envelope.fetched_at))


def unknown_fields(entity: str, item: Any) -> list[str]:
    """Fields of a served item the contract does not know (schema drift), sorted."""
    if not isinstance(item, dict):
        return []
    known = MODELS[entity].model_fields
    return sorted({_field_label(str(name)) for name in item if name not in known})


def _field_label(name: str) -> str:
    """A field name fit for logs and a DynamoDB string set: valid UTF-8, never empty, short."""
    label = name[:100].encode("utf-8", "backslashreplace").decode("utf-8")
    return label or '""'


def max_future(now: datetime | None = None, max_future_s: float | None = None) -> datetime:
    """The latest acceptable `updated_at` (naive UTC): now plus the configured tolerance."""
    if max_future_s is None:
        from chalicelib.settings import get_settings  # settings never import the contract

        max_future_s = get_settings().max_future_s
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).replace(tzinfo=None) + timedelta(seconds=max_future_s)


def describe_validation_error(error: ValidationError) -> str:
    """A one-line quarantine reason naming the first few offending fields."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or '<root>'}: {problem['msg']}"
        for problem in error.errors()[:5]
    )
    return f"breaks the contract: {problems}"


def validate_item(entity: str, item: Any, *, not_after: datetime | None = None) -> dict[str, Any]:
    """Validate one API item; return it as a plain dict of the contract's fields.

    `not_after` is the latest acceptable `updated_at` (naive UTC); by default `max_future()`,
    the clock plus `PIPELINE_MAX_FUTURE_S`. Raises `pydantic.ValidationError` (a `ValueError`)
    when the item breaks the contract, and `KeyError` for an unknown entity.
    """
    limit = not_after if not_after is not None else max_future()
    model = MODELS[entity].model_validate(item, context={"not_after": limit})
    return model.model_dump()
