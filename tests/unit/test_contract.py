"""The contract models: what every MooVitamix-compatible server may send, and what it may not.

Validation must accept every shape the contract allows (and keep it to the character, because
the stores hold what was served) and reject every wrong type with an error naming the field,
because a rejected item is quarantined with that error as its reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chalicelib.model.contract import (
    ENTITIES,
    canonical_instant,
    describe_validation_error,
    entity_key,
    legacy_partition_key,
    max_future,
    parse_timestamp,
    partition_key,
    unknown_fields,
    validate_item,
    version_of,
    version_rank,
)
from chalicelib.model.envelope import SCHEMA_VERSION, Envelope
from localcloud.fakeapi import HOSTILE_STRINGS, iter_items
from tests.helpers.factories import item_for, listen_history, track, user

TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "users": ("first_name", "last_name", "email", "gender", "favorite_genres"),
    "tracks": ("name", "artist", "songwriters", "genres", "album"),
    "listen_history": (),
}
ID_FIELD = {"users": "id", "tracks": "id", "listen_history": "user_id"}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {e: tuple(item_for(e)) for e in ENTITIES}


def rejects(entity: str, item: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        validate_item(entity, item)
    return caught.value


# --- accepted shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES)
def test_valid_item_comes_back_unchanged(entity: str) -> None:
    item = item_for(entity)
    assert validate_item(entity, item) == item


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_item_of_the_fake_api_is_valid(entity: str) -> None:
    for item in iter_items(entity, 300, seed=11):
        assert validate_item(entity, item) == item


@pytest.mark.parametrize(
    "timestamp",
    [
        "2025-07-13T01:47:15.825923",  # the usual isoformat()
        "2025-07-13T01:47:15",  # isoformat() when microseconds are zero
        "2025-07-13T01:47:15.8",  # fewer fraction digits
        "2025-07-13T01:47:15.000001",
        "2025-07-13T01:47:15Z",  # a zone is tolerated
        "2025-07-13T01:47:15.825923+02:00",
        "1970-01-01T00:00:00",
        "9999-12-31T23:59:59.999999",
    ],
)
@pytest.mark.parametrize("field", ["created_at", "updated_at"])
def test_timestamp_shapes_are_accepted_and_kept_verbatim(timestamp: str, field: str) -> None:
    item = user(**{field: timestamp})
    assert validate_item("users", item, not_after=datetime.max)[field] == timestamp


def test_updated_before_created_is_accepted() -> None:
    item = track(created_at="2025-07-13T01:47:15.825923", updated_at="2021-01-01T00:00:00")
    assert validate_item("tracks", item) == item


@pytest.mark.parametrize("hostile", [*HOSTILE_STRINGS, "", " ", "a" * 100_000, "\u2028\ufeff"])
@pytest.mark.parametrize("entity", ["users", "tracks"])
def test_hostile_strings_are_accepted_verbatim(entity: str, hostile: str) -> None:
    for field in TEXT_FIELDS[entity]:
        item = item_for(entity, **{field: hostile})
        assert validate_item(entity, item)[field] == hostile


def test_unknown_fields_are_ignored_not_stored() -> None:
    served = user(nickname="x", created_by="someone")
    assert validate_item("users", served) == user()


def test_listen_history_keeps_items_in_served_order() -> None:
    items = [9, 1, 8, 1, 7]  # upstream promises distinct ids; nothing breaks if not
    assert validate_item("listen_history", listen_history(items=items))["items"] == items
    assert validate_item("listen_history", listen_history(items=[]))["items"] == []


@pytest.mark.parametrize("entity", ["users", "tracks"])
@pytest.mark.parametrize("value", [0, 1, 100_000, 2**63 - 1])
def test_ids_in_range(entity: str, value: int) -> None:
    assert validate_item(entity, item_for(entity, id=value))["id"] == value


@pytest.mark.parametrize("duration", ["00:00", "03:45", "9:05", "59:59", "123:00", "999:59"])
def test_durations(duration: str) -> None:
    assert validate_item("tracks", track(duration=duration))["duration"] == duration


# --- rejected shapes ------------------------------------------------------------------------

WRONG_IDS = [True, False, "1", "0x10", 1.0, 1.5, None, -1, 2**63, [1], {"id": 1}]


@pytest.mark.parametrize("value", WRONG_IDS, ids=repr)
@pytest.mark.parametrize("entity", ENTITIES)
def test_wrong_id_types_are_rejected(entity: str, value: Any) -> None:
    field = ID_FIELD[entity]
    error = rejects(entity, item_for(entity, **{field: value}))
    assert field in describe_validation_error(error)


@pytest.mark.parametrize("value", [True, "5", 5.0, None, -3, 2**63], ids=repr)
def test_wrong_track_ids_in_listen_history_are_rejected(value: Any) -> None:
    error = rejects("listen_history", listen_history(items=[1, 2, value]))
    assert "items.2" in describe_validation_error(error)


@pytest.mark.parametrize("value", ["1,2,3", None, 5, {"0": 1}], ids=repr)
def test_items_must_be_a_list(value: Any) -> None:
    rejects("listen_history", listen_history(items=value))


@pytest.mark.parametrize("entity", ["users", "tracks"])
def test_nul_in_any_text_field_is_rejected(entity: str) -> None:
    for field in TEXT_FIELDS[entity]:
        error = rejects(entity, item_for(entity, **{field: "before\x00after"}))
        reason = describe_validation_error(error)
        assert field in reason
        assert "NUL" in reason


@pytest.mark.parametrize("entity", ["users", "tracks"])
@pytest.mark.parametrize("value", [None, 3, 3.5, True, ["a"], {"a": 1}, b"bytes"], ids=repr)
def test_text_must_be_a_string(entity: str, value: Any) -> None:
    for field in TEXT_FIELDS[entity]:
        rejects(entity, item_for(entity, **{field: value}))


@pytest.mark.parametrize(
    "duration",
    [
        "",
        "3",
        "03:60",
        "03:3",
        "1000:00",
        "-1:00",
        "03:45:00",
        " 03:45",
        "03:45\n",  # `$` in a regex accepts this; the contract does not
        "\uff10\uff13:45",  # fullwidth digits match `\d`
        "\u0660\u0663:45",  # Arabic-Indic digits match `\d`
        "3m45s",
        215,
        None,
    ],
    ids=repr,
)
def test_bad_durations_are_rejected(duration: Any) -> None:
    error = rejects("tracks", track(duration=duration))
    assert "duration" in describe_validation_error(error)


BAD_TIMESTAMPS = [
    "",
    "not-a-timestamp",
    "2025-13-45T25:61:00",
    "2025-02-30T00:00:00",
    "2025-07-13T24:00:00",
    "2025-07-13",  # a date is not a timestamp
    "2025-W28-7T01:47:15",  # week date
    "20250713T014715",  # basic format
    "2025-07-13T01:47",  # no seconds: isoformat() never prints this
    "2025-07-13T01:47:15.8259231",  # 7 digits: fromisoformat() would truncate them
    "2025-07-13T01:47:15.",
    " 2025-07-13T01:47:15",
    "2025-07-13T01:47:15\n",
    "2025-07-13T01:47:15 UTC",
    "\uff12025-07-13T01:47:15",
    1_752_580_800,
    1_752_580_800.5,
    None,
    True,
]


@pytest.mark.parametrize("value", BAD_TIMESTAMPS, ids=repr)
@pytest.mark.parametrize("field", ["created_at", "updated_at"])
@pytest.mark.parametrize("entity", ENTITIES)
def test_bad_timestamps_are_rejected(entity: str, field: str, value: Any) -> None:
    error = rejects(entity, item_for(entity, **{field: value}))
    assert field in describe_validation_error(error)


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_missing_field_is_rejected_by_name(entity: str) -> None:
    for field in REQUIRED_FIELDS[entity]:
        item = item_for(entity)
        del item[field]
        error = rejects(entity, item)
        reason = describe_validation_error(error)
        assert reason.startswith("breaks the contract: ")
        assert field in reason
        assert "Field required" in reason


@pytest.mark.parametrize("value", [None, [], "user", 42, [user()]], ids=repr)
@pytest.mark.parametrize("entity", ENTITIES)
def test_non_objects_are_rejected(entity: str, value: Any) -> None:
    rejects(entity, value)


def test_unknown_entity_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        validate_item("albums", user())


def test_reason_names_at_most_five_problems() -> None:
    broken = dict.fromkeys(REQUIRED_FIELDS["users"], None)
    reason = describe_validation_error(rejects("users", broken))
    assert reason.count(";") == 4


# --- keys and versions ----------------------------------------------------------------------


def test_keys_and_partition_keys() -> None:
    assert entity_key("users", user(id=42)) == (42,)
    assert partition_key("users", user(id=42)) == "users:42"
    assert partition_key("tracks", track(id=42)) == "tracks:42"
    history = listen_history(user_id=7, created_at="2025-02-03T04:05:06")
    assert entity_key("listen_history", history) == (7, "2025-02-03T04:05:06.000000")
    assert partition_key("listen_history", history) == (
        "listen_history:7:2025-02-03T04:05:06.000000"
    )
    assert legacy_partition_key("listen_history", history) == (
        "listen_history:7:2025-02-03T04:05:06"
    )


@pytest.mark.parametrize(
    "spelling",
    [
        "2025-02-03T08:00:00",
        "2025-02-03T08:00:00.000",
        "2025-02-03T08:00:00.000000",
        "2025-02-03T10:00:00+02:00",
        "2025-02-03T08:00:00Z",
        "2025-02-03T03:00:00.0-05:00",
    ],
)
def test_one_instant_is_one_listen_history_key(spelling: str) -> None:
    history = listen_history(user_id=7, created_at=spelling)
    assert entity_key("listen_history", history) == (7, "2025-02-03T08:00:00.000000")
    assert validate_item("listen_history", history)["created_at"] == spelling  # kept as data


def test_versions_rank_by_updated_at_then_by_the_later_fetch() -> None:
    def envelope(updated_at: str, fetched_at: str) -> Envelope:
        item = user(updated_at=updated_at)
        return Envelope(entity="users", run_id="r", fetched_at=fetched_at, item=item)

    early = envelope("2025-07-13T01:47:15", "2026-01-01T00:00:00+00:00")
    late = envelope("2025-07-13T03:47:15+02:00", "2026-01-02T00:00:00+00:00")
    assert version_rank(late) > version_rank(early)  # equal updated_at: the later fetch wins
    assert version_rank(envelope("2025-07-13T01:47:16", "t")) > version_rank(late)
    assert version_rank(envelope("2025-07-13T01:47:15", "not a time")) < version_rank(early)


def test_users_and_tracks_sharing_an_id_get_different_partition_keys() -> None:
    assert partition_key("users", user(id=5)) != partition_key("tracks", track(id=5))


def test_versions_compare_as_instants() -> None:
    assert version_of(user(updated_at="2025-07-13T01:47:15")) < version_of(
        user(updated_at="2025-07-13T01:47:15.000001")
    )
    assert version_of(user(updated_at="2025-07-13T01:47:15.5")) == version_of(
        user(updated_at="2025-07-13T01:47:15.500000")
    )
    assert version_of(user(updated_at="2025-07-13T03:47:15+02:00")) == version_of(
        user(updated_at="2025-07-13T01:47:15")
    )
    assert version_of(user(updated_at="2025-07-13T01:47:15Z")).tzinfo is None


# --- envelope -------------------------------------------------------------------------------


def test_envelope_shape() -> None:
    envelope = Envelope(entity="users", run_id="r", fetched_at="t", item=user())
    assert envelope.schema_version == SCHEMA_VERSION == 1
    with pytest.raises(ValidationError):
        Envelope.model_validate({**envelope.model_dump(), "extra": 1})
    with pytest.raises(ValidationError):
        Envelope.model_validate({**envelope.model_dump(), "schema_version": 2})
    with pytest.raises(ValidationError):
        Envelope.model_validate({**envelope.model_dump(), "entity": "albums"})
    with pytest.raises(ValidationError):
        Envelope.model_validate({**envelope.model_dump(), "run_id": 5})


# --- properties -----------------------------------------------------------------------------

# Any text but NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8: no store takes them).
texts = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=60
)
ids = st.integers(0, 2**63 - 1)
instants = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))


def timestamps() -> st.SearchStrategy[str]:
    """isoformat() with and without a fraction, as servers print them."""
    return st.builds(
        lambda moment, whole: (
            moment.replace(microsecond=0).isoformat() if whole else moment.isoformat()
        ),
        instants,
        st.booleans(),
    )


users = st.fixed_dictionaries(
    {
        "id": ids,
        **{field: texts for field in TEXT_FIELDS["users"]},
        "created_at": timestamps(),
        "updated_at": timestamps(),
    }
)
tracks = st.fixed_dictionaries(
    {
        "id": ids,
        **{field: texts for field in TEXT_FIELDS["tracks"]},
        "duration": st.builds(
            lambda m, s: f"{m:02d}:{s:02d}", st.integers(0, 999), st.integers(0, 59)
        ),
        "created_at": timestamps(),
        "updated_at": timestamps(),
    }
)
histories = st.fixed_dictionaries(
    {
        "user_id": ids,
        "items": st.lists(ids, max_size=20),
        "created_at": timestamps(),
        "updated_at": timestamps(),
    }
)
ANY_ITEM = st.one_of(
    st.tuples(st.just("users"), users),
    st.tuples(st.just("tracks"), tracks),
    st.tuples(st.just("listen_history"), histories),
)


@settings(max_examples=300, deadline=None)
@given(pair=ANY_ITEM)
def test_any_contract_item_validates_unchanged_with_a_stable_key(
    pair: tuple[str, dict[str, Any]],
) -> None:
    entity, item = pair
    assert validate_item(entity, item, not_after=datetime.max) == item
    key = partition_key(entity, item)
    assert key.startswith(f"{entity}:")
    assert key == partition_key(entity, validate_item(entity, item, not_after=datetime.max))
    assert key.split(":", 2)[1] == str(item[ID_FIELD[entity]])
    assert len(key.encode()) <= 256  # the Kinesis partition key limit


@settings(max_examples=200, deadline=None)
@given(moment=instants, whole=st.booleans(), offset_min=st.integers(-14 * 60, 14 * 60))
def test_timestamps_round_trip_to_the_same_instant(
    moment: datetime, whole: bool, offset_min: int
) -> None:
    if whole:
        moment = moment.replace(microsecond=0)
    assert parse_timestamp(moment.isoformat()) == moment
    assert validate_item("users", user(updated_at=moment.isoformat()), not_after=datetime.max)
    if datetime(2, 1, 1) < moment < datetime(9998, 12, 31):  # the shifted time must exist
        zone = timezone(timedelta(minutes=offset_min))
        aware = moment.replace(tzinfo=UTC).astimezone(zone).isoformat()
        assert parse_timestamp(aware) == moment
        assert version_of(user(updated_at=aware)) == moment


@settings(max_examples=200, deadline=None)
@given(
    entity=st.sampled_from(ENTITIES),
    wrong=st.one_of(
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=10),
        st.none(),
        st.integers(max_value=-1),
        st.integers(min_value=2**63),
        st.lists(st.integers(), max_size=2),
    ),
)
def test_any_non_integer_id_is_rejected(entity: str, wrong: Any) -> None:
    rejects(entity, item_for(entity, **{ID_FIELD[entity]: wrong}))


@st.composite
def near_timestamps(draw: st.DrawFn) -> tuple[str, str]:
    """Timestamp-shaped strings: real ISO spellings (zones, 0 to 6 fraction digits), some of them
    broken by one edit (a character replaced, dropped or inserted), and arbitrary text; so that
    both sides of the contract's line are drawn often, not only the rejected side."""
    moment = draw(instants)
    spelling = moment.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds", "auto"])))
    if draw(st.booleans()):
        offset = timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60)))
        sign, offset = ("-", -offset) if offset < timedelta(0) else ("+", offset)
        hours, minutes = divmod(int(offset.total_seconds()) // 60, 60)
        spelling += draw(st.sampled_from(["Z", f"{sign}{hours:02d}:{minutes:02d}"]))
    kind = draw(st.sampled_from(["valid", "valid", "edited", "text"]))
    if kind == "text":
        return kind, draw(st.text(max_size=30))
    if kind == "edited":
        at = draw(st.integers(0, len(spelling) - 1))
        edit = draw(st.sampled_from(["replace", "drop", "insert"]))
        char = draw(st.characters(codec="utf-8", exclude_categories=["Cs"]))
        if edit == "replace":
            spelling = spelling[:at] + char + spelling[at + 1 :]
        elif edit == "drop":
            spelling = spelling[:at] + spelling[at + 1 :]
        else:
            spelling = spelling[:at] + char + spelling[at:]
    return kind, spelling


@settings(max_examples=300, deadline=None)
@given(drawn=near_timestamps())
def test_only_timestamp_shaped_strings_pass(drawn: tuple[str, str]) -> None:
    """Whatever text passes must be a timestamp the stores can parse, kept verbatim; an ISO
    spelling of an instant that exists in UTC always passes."""
    kind, text = drawn
    try:
        validated = validate_item("users", user(updated_at=text), not_after=datetime.max)
    except ValidationError:
        if kind == "valid":
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is not None:  # only a zone may push it out of range in UTC
                with pytest.raises(OverflowError):
                    moment.astimezone(UTC)
                return
            raise
        return
    assert validated["updated_at"] == text
    assert text.isascii()
    parse_timestamp(text)


# --- versions that can be corrected ------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, 0)
LIMIT = NOW + timedelta(seconds=86_400)


def test_max_future_is_the_clock_plus_the_setting() -> None:
    assert max_future(NOW.replace(tzinfo=UTC), 60) == NOW + timedelta(seconds=60)


@pytest.mark.parametrize(
    "far",
    ["9999-12-31T23:59:59", "9999-12-31T23:00:00-05:00", "2100-01-01T00:00:00Z"],
)
def test_an_updated_at_far_in_the_future_is_refused_by_name(far: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_item("users", user(updated_at=far), not_after=LIMIT)
    reason = describe_validation_error(caught.value)
    assert reason.startswith("breaks the contract: updated_at:")
    assert "future" in reason or "out of range" in reason


def test_a_zone_pushing_past_year_9999_is_a_contract_violation_not_an_overflow() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_item("users", user(created_at="9999-12-31T23:00:00-05:00"))
    assert "created_at" in describe_validation_error(caught.value)


def test_created_at_in_the_future_is_not_a_version_and_is_kept() -> None:
    item = user(created_at="2100-01-01T00:00:00")
    assert validate_item("users", item, not_after=LIMIT) == item


@settings(max_examples=300, deadline=None)
@given(
    offset_us=st.one_of(
        st.integers(-3_000_000, 3_000_000),  # around the limit, to the microsecond
        st.integers(-(10**12), 10**12),
    ),
    zone_min=st.integers(-14 * 60, 14 * 60),
    digits=st.integers(0, 6),
    suffix=st.sampled_from(["offset", "Z", "naive"]),
)
def test_the_future_tolerance_holds_for_every_spelling(
    offset_us: int, zone_min: int, digits: int, suffix: str
) -> None:
    """Timestamp-shaped strings near the limit (zones, 0..6 fraction digits): accepted exactly
    when their instant is not after the limit."""
    instant = LIMIT + timedelta(microseconds=offset_us)
    if digits < 6:  # the text cannot say more than its digits: truncate the instant
        step = 10 ** (6 - digits)
        instant = instant.replace(microsecond=instant.microsecond // step * step)
    if suffix == "offset":
        zone = timezone(timedelta(minutes=zone_min))
        local = instant.replace(tzinfo=UTC).astimezone(zone)
        tail = local.strftime("%z")
        tail = f"{tail[:3]}:{tail[3:]}"
    else:
        local = instant
        tail = "Z" if suffix == "Z" else ""
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    text += tail
    assert parse_timestamp(text) == instant
    item = user(updated_at=text)
    if instant <= LIMIT:
        assert validate_item("users", item, not_after=LIMIT)["updated_at"] == text
    else:
        with pytest.raises(ValidationError, match="in the future"):
            validate_item("users", item, not_after=LIMIT)


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    zone_min=st.integers(-14 * 60, 14 * 60),
    digits=st.integers(0, 6),
)
def test_every_spelling_of_an_instant_is_one_key(
    moment: datetime, zone_min: int, digits: int
) -> None:
    step = 10 ** (6 - digits)
    moment = moment.replace(microsecond=moment.microsecond // step * step)
    local = moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=zone_min)))
    spelled = local.isoformat(timespec="seconds")
    if digits:
        spelled = spelled[:19] + "." + f"{moment.microsecond:06d}"[:digits] + spelled[19:]
    naive = listen_history(user_id=3, created_at=moment.isoformat())
    zoned = listen_history(user_id=3, created_at=spelled)
    assert entity_key("listen_history", zoned) == entity_key("listen_history", naive)
    assert partition_key("listen_history", zoned) == partition_key("listen_history", naive)
    assert canonical_instant(spelled) == moment.isoformat(timespec="microseconds")


@pytest.mark.parametrize("entity", ["users", "tracks"])
def test_a_lone_surrogate_is_refused_naming_the_field(entity: str) -> None:
    field = TEXT_FIELDS[entity][1]
    with pytest.raises(ValidationError) as caught:
        validate_item(entity, item_for(entity, **{field: "ok \ud800 no"}))
    reason = describe_validation_error(caught.value)
    assert reason.startswith(f"breaks the contract: {field}:")
    assert "U+D800" in reason


def test_unknown_fields_are_named_sorted() -> None:
    assert unknown_fields("users", user(nickname="x", created_by="y")) == ["created_by", "nickname"]
    assert unknown_fields("users", user()) == []
    assert unknown_fields("tracks", None) == []


def test_unknown_field_names_are_safe_to_store_and_log() -> None:
    """A drift report must not fail on a name no store accepts (lone surrogate, empty)."""
    names = unknown_fields("users", {**user(), "bad\ud800": 1, "": 2, "x" * 500: 3})
    assert names == sorted(['""', "bad\\ud800", "x" * 100])
    for name in names:
        name.encode("utf-8")
