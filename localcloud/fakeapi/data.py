"""The fake API's data: a pure function of `(seed, entity, index)`, computed when served.

A test can compare the stores with `iter_items`, and `records` can be in the millions, because
nothing is stored: an item is generated from its index. Ids are a seeded permutation (unique,
random-looking, upstream's range); the quirks the contract warns about (timestamps without a
fraction, `updated_at` earlier than `created_at`, several listen-history rows per user,
hostile text) occur at low, deterministic rates, so every run exercises them. Written by hand:
Faker per item is far too slow for lazy pages, and no library generates data addressable by
index.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

# --------------------------------------------------------------------------------------------
# Deterministic building blocks
# --------------------------------------------------------------------------------------------

ANCHOR: Final = datetime(2025, 7, 15, 12, 0, 0)
"""The fake's "now": upstream draws relative to the wall clock, which would break determinism."""

_TWO_YEARS_S: Final = 730 * 86_400
_ONE_YEAR_S: Final = 365 * 86_400
_MIN_ID_RANGE: Final = 100_000  # upstream draws ids in 1..100000

_WHOLE_SECOND_RATE: Final = 1 / 20  # items with a timestamp that isoformat() prints sans fraction
_HOSTILE_STRIDE: Final = 40  # one item in 40 (2.5 %) of users and tracks gets a hostile field
_MULTI_HISTORY_RATE: Final = 0.02  # listen-history rows that reuse a nearby earlier row's user
_MULTI_HISTORY_REACH: Final = 3  # ... at most this many rows back
_HISTORY_TRACKS: Final = 5  # distinct track ids per listen-history row, as upstream


def stable_int(*parts: object) -> int:
    """A 64-bit hash of `parts` that is the same in every process (unlike the salted hash())."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _rng(*parts: object) -> random.Random:
    return random.Random(stable_int(*parts))  # noqa: S311 - test data, not cryptography


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin, exact for every n below 3.3e24."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _next_prime(n: int) -> int:
    while not _is_prime(n):
        n += 1
    return n


@dataclass(frozen=True)
class _Permutation:
    """A bijection of `range(size)` that looks random and stores nothing.

    `x -> a2 * (a1 * x + b1)^e + b2 (mod p)` is a permutation of Z_p (affine maps with a1, a2
    non-zero, and a power map with gcd(e, p - 1) = 1); walking the cycle until the value falls
    below `size` restricts it to a permutation of `range(size)`. With p the next prime after
    `size` the walk almost always takes one step.
    """

    size: int
    prime: int
    a1: int
    b1: int
    exponent: int
    a2: int
    b2: int

    def __call__(self, x: int) -> int:
        p = self.prime
        while True:
            x = pow((self.a1 * x + self.b1) % p, self.exponent, p)
            x = (self.a2 * x + self.b2) % p
            if x < self.size:
                return x


@lru_cache(maxsize=64)
def _permutation(seed: int, entity: str, size: int) -> _Permutation:
    prime = _next_prime(max(size, 3))
    exponent = next(e for e in range(3, prime, 2) if math.gcd(e, prime - 1) == 1)
    rng = _rng(seed, entity, "permutation")
    return _Permutation(
        size=size,
        prime=prime,
        a1=rng.randrange(1, prime),
        b1=rng.randrange(prime),
        exponent=exponent,
        a2=rng.randrange(1, prime),
        b2=rng.randrange(prime),
    )


def id_for_index(entity: str, index: int, records: int, seed: int) -> int:
    """The id of the `index`-th user or track: unique, random-looking, in 1..max(1e5, records).

    Users and tracks use different permutations, so (as upstream never promises otherwise)
    a user and a track can share an id; with `records >= 100000` both cover the whole range.
    """
    return _permutation(seed, entity, max(_MIN_ID_RANGE, records))(index) + 1


# --------------------------------------------------------------------------------------------
# Word lists (Faker per item is far too slow for lazy pages; these are enough for realism)
# --------------------------------------------------------------------------------------------

_FIRST_NAMES: Final = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
    "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Lisa", "Matthew", "Betty", "Anthony",
    "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily",
    "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Carol", "Kevin", "Amanda", "Brian",
    "Melissa", "George", "Deborah", "Timothy", "Stephanie", "Ronald", "Rebecca", "Jason",
    "Laura", "Edward", "Sharon", "Jeffrey", "Cynthia", "Ryan", "Kathleen", "Jacob", "Amy",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans",
)  # fmt: skip
_WORDS: Final = (
    "above", "account", "across", "action", "after", "again", "agent", "almost", "among",
    "answer", "around", "artist", "author", "avoid", "beautiful", "because", "behind",
    "believe", "better", "beyond", "billion", "blood", "board", "break", "bring", "build",
    "camera", "career", "center", "century", "chance", "change", "choice", "church", "city",
    "close", "color", "common", "country", "course", "culture", "dark", "daughter", "decade",
    "deep", "dinner", "dream", "early", "east", "energy", "evening", "every", "face", "family",
    "field", "fire", "flower", "forget", "forward", "friend", "future", "garden", "glass",
    "green", "ground", "happy", "heart", "history", "home", "hope", "house", "idea", "image",
    "island", "laugh", "leader", "light", "little", "memory", "minute", "moment", "money",
    "morning", "mother", "music", "nation", "nature", "night", "north", "ocean", "paper",
    "party", "peace", "picture", "place", "power", "quite", "radio", "reason", "river",
    "road", "season", "second", "shadow", "silence", "simple", "single", "sister", "smile",
    "social", "soldier", "someone", "song", "south", "space", "spring", "star", "stone",
    "story", "street", "summer", "sunday", "table", "theory", "thought", "together", "tonight",
    "travel", "truth", "under", "value", "voice", "wall", "water", "weight", "whatever",
    "white", "window", "winter", "woman", "world", "yellow", "young",
)  # fmt: skip
_GENDERS: Final = (
    "Male", "Female", "Non-binary", "Genderqueer", "Genderfluid", "Agender", "Bigender",
    "Gender questioning", "Gender nonconforming",
)  # fmt: skip
_GENRES: Final = (
    "Rock", "Pop", "Hip Hop", "Jazz", "Electronic", "Classical", "Country", "Blues", "R&B",
    "Reggae", "Folk", "Metal", "Punk", "Funk", "Indie", "Alternative", "Techno",
)  # fmt: skip
_FREE_EMAIL: Final = ("gmail.com", "yahoo.com", "hotmail.com")
_TLDS: Final = ("com", "net", "org", "biz", "info")

_LONG_TEXT: Final = ("na " * 700)[:1999] + "é"  # 2,000 characters, one of them not ASCII

HOSTILE_STRINGS: Final[tuple[str, ...]] = (
    "O'Connor's \"Greatest\" Hits",
    "'); DROP TABLE users;--",
    "Robert'); DROP TABLE tracks; --",
    "C:\\Users\\dj\\mixes\\new\\track.mp3",
    "Beyoncé",
    "東京事変",
    "🎵 Midnight Groove 🎶",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family mix",
    _LONG_TEXT,
    "  padded with spaces  ",
    "first line\nsecond line\r\nthird line",
    "\ttabbed\tvalue",
    "%s %d {0} ${jndi:ldap://x} <script>alert(1)</script>",
    "مرحبا بالعالم",
    "e\u0301clair",
    "NULL",
)
"""Text that breaks naive SQL, CSV, logging or encoding; never NUL, which PostgreSQL refuses."""

_TEXT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "users": ("first_name", "last_name", "email", "gender", "favorite_genres"),
    "tracks": ("name", "artist", "songwriters", "genres", "album"),
    "listen_history": (),
}


# --------------------------------------------------------------------------------------------
# Item generation
# --------------------------------------------------------------------------------------------


def _timestamp(rng: random.Random, span_s: int, *, whole_second: bool) -> datetime:
    """A naive datetime in the `span_s` seconds before ANCHOR; a fraction unless whole_second."""
    micro = 0 if whole_second else rng.randrange(1, 1_000_000)
    return ANCHOR - timedelta(seconds=rng.randrange(span_s), microseconds=micro)


def _whole_seconds(rng: random.Random) -> tuple[bool, bool]:
    """Which of (created_at, updated_at) print without a fraction: one item in 20 has some."""
    if rng.random() >= _WHOLE_SECOND_RATE:
        return False, False
    return rng.choice(((True, False), (False, True), (True, True)))


def _email(rng: random.Random, first: str, last: str) -> str:
    first, last = first.lower(), last.lower()
    user = rng.choice((f"{first}{last}", f"{first}.{last}", f"{first[0]}{last}", f"{last}{first}"))
    if rng.random() < 0.3:
        user += str(rng.randrange(100))
    if rng.random() < 0.6:
        domain = rng.choice(_FREE_EMAIL)
    else:
        domain = f"{rng.choice(_LAST_NAMES).lower()}.{rng.choice(_TLDS)}"
    return f"{user}@{domain}"


def _user(rng: random.Random, index: int, records: int, seed: int) -> dict[str, Any]:
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    whole_created, whole_updated = _whole_seconds(rng)
    return {
        "id": id_for_index("users", index, records, seed),
        "first_name": first,
        "last_name": last,
        "email": _email(rng, first, last),
        "gender": rng.choice(_GENDERS),
        "favorite_genres": rng.choice(_GENRES),
        "created_at": _timestamp(rng, _TWO_YEARS_S, whole_second=whole_created).isoformat(),
        "updated_at": _timestamp(rng, _ONE_YEAR_S, whole_second=whole_updated).isoformat(),
    }


def _track(rng: random.Random, index: int, records: int, seed: int) -> dict[str, Any]:
    whole_created, whole_updated = _whole_seconds(rng)
    return {
        "id": id_for_index("tracks", index, records, seed),
        "name": rng.choice(_WORDS),
        "artist": f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}",
        "songwriters": f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}",
        "duration": f"{rng.randrange(60):02d}:{rng.randrange(60):02d}",
        "genres": rng.choice(_WORDS),
        "album": rng.choice(_WORDS),
        "created_at": _timestamp(rng, _TWO_YEARS_S, whole_second=whole_created).isoformat(),
        "updated_at": _timestamp(rng, _ONE_YEAR_S, whole_second=whole_updated).isoformat(),
    }


def _listen_history(rng: random.Random, index: int, records: int, seed: int) -> dict[str, Any]:
    """Row i belongs to user i (as upstream), except ~2 % reusing the user of a row 1-3 back.

    The key (user_id, created_at) stays unique without looking at other rows: every row that
    can hold user u is row u + d with d in 0..3, and its created_at has microsecond = d mod 4.
    """
    step = _MULTI_HISTORY_REACH + 1
    offset = 0
    if index > 0 and rng.random() < _MULTI_HISTORY_RATE:
        offset = rng.randint(1, min(_MULTI_HISTORY_REACH, index))
    whole_created, whole_updated = _whole_seconds(rng)
    if offset:
        micro = rng.randrange(1_000_000 // step) * step + offset
    elif whole_created:
        micro = 0
    else:
        micro = rng.randrange(1, 1_000_000 // step) * step
    created = ANCHOR - timedelta(seconds=rng.randrange(_TWO_YEARS_S), microseconds=micro)
    # upstream draws updated_at between created_at and now
    room_us = (ANCHOR - created) // timedelta(microseconds=1)
    updated = created + timedelta(microseconds=rng.randrange(room_us + 1))
    if whole_updated:
        updated = max(updated.replace(microsecond=0), created)
    tracks = rng.sample(range(records), min(_HISTORY_TRACKS, records))
    return {
        "user_id": id_for_index("users", index - offset, records, seed),
        "items": [id_for_index("tracks", track, records, seed) for track in tracks],
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
    }


_GENERATORS: Final = {"users": _user, "tracks": _track, "listen_history": _listen_history}


def generate_item(entity: str, index: int, records: int, seed: int) -> dict[str, Any]:
    """The `index`-th item (0-based, in served order) of `entity`; a pure, O(1) function.

    Raises KeyError for an unknown entity and IndexError outside `range(records)`.
    """
    generator = _GENERATORS[entity]
    if not 0 <= index < records:
        raise IndexError(f"{entity} index {index} outside 0..{records - 1}")
    rng = _rng(seed, entity, index)
    item = generator(rng, index, records, seed)
    fields = _TEXT_FIELDS[entity]
    if fields:
        shifted = index + stable_int(seed, entity, "hostile") % _HOSTILE_STRIDE
        if shifted % _HOSTILE_STRIDE == 0:  # strided, so every kind shows up at 1000 records
            kind = (shifted // _HOSTILE_STRIDE + stable_int(seed, entity, "kind")) % len(
                HOSTILE_STRINGS
            )
            item[rng.choice(fields)] = HOSTILE_STRINGS[kind]
    return item


def iter_items(entity: str, records: int, seed: int) -> Iterator[dict[str, Any]]:
    """Every item of `entity` in served order, what a complete scan of the API returns."""
    for index in range(records):
        yield generate_item(entity, index, records, seed)


def page_body(entity: str, page: int, size: int, records: int, seed: int) -> dict[str, Any]:
    """The answer to `GET /<entity>?page=&size=`, in fastapi-pagination's field order."""
    start = (page - 1) * size
    stop = min(start + size, records)
    return {
        "items": [generate_item(entity, index, records, seed) for index in range(start, stop)],
        "total": records,
        "page": page,
        "size": size,
        "pages": math.ceil(records / size),
    }
