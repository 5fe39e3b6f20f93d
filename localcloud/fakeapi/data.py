"""A MooVitamix-compatible fake API: lazy, deterministic data, the contract's quirks, faults.

The pipeline is also pointed at the original upstream app, so this fake serves exactly the
contract of `docs/source-api.md` (same paths, query parameters, page envelope, 422 bodies,
`/` -> `/docs`), and nothing upstream lacks. What it adds is control:

* data is a pure function of `(seed, entity, index)`, computed when a page is served, so a
  test can compare the stores with `iter_items` and `records` can be in the millions;
* the quirks the contract warns about (timestamps without a fraction, `updated_at` earlier
  than `created_at`, several listen-history rows per user, hostile text) occur at low,
  deterministic rates, so every run exercises them;
* `FaultInjector` adds what a production deployment does now and then (5xx, 429, slow
  answers, malformed items), per request at random, with counters for the tests.

Run it with `python -m localcloud.fakeapi --records 5000 --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import math
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from types import TracebackType
from typing import Annotated, Any, Final, NamedTuple

import uvicorn
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel

from chalicelib.contract import ENTITIES, ListenHistory, Track, User
from localcloud.content_faults import CONTENT_FAULTS, apply_content_faults
from localcloud.source_faults import SOURCE_FAULT_NAMES, SourceFaults, describe

__all__ = [
    "ANCHOR",
    "FAULT_NAMES",
    "SOURCE_FAULT_NAMES",
    "FakeApiServer",
    "FaultDecision",
    "FaultInjector",
    "SourceFaults",
    "build_app",
    "generate_item",
    "id_for_index",
    "iter_items",
    "main",
    "page_body",
]

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


def _stable_int(*parts: object) -> int:
    """A 64-bit hash of `parts` that is the same in every process (unlike the salted hash())."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _rng(*parts: object) -> random.Random:
    return random.Random(_stable_int(*parts))  # noqa: S311 - test data, not cryptography


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
        shifted = index + _stable_int(seed, entity, "hostile") % _HOSTILE_STRIDE
        if shifted % _HOSTILE_STRIDE == 0:  # strided, so every kind shows up at 1000 records
            kind = (shifted // _HOSTILE_STRIDE + _stable_int(seed, entity, "kind")) % len(
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


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

FAULT_NAMES: Final = ("api-5xx", "api-429", "api-timeout", "poison", *CONTENT_FAULTS)
_REQUEST_FAULTS: Final = ("api-5xx", "api-429", "api-timeout")


class FaultDecision(NamedTuple):
    """What one request suffers: the fault's name and the status it answers with."""

    name: str
    status_code: int


def _poison_variants(entity: str, item: dict[str, Any]) -> list[Any]:
    """Items that break the contract in one way each; all must fail `validate_item`."""
    variants: list[Any] = [
        {**item, "created_at": "not-a-timestamp"},
        {**item, "updated_at": "2025-13-45T25:61:00"},
        {key: value for key, value in item.items() if key != "created_at"},
        {**item, "updated_at": 1_752_580_800},
        None,
    ]
    if entity == "listen_history":
        variants += [
            {**item, "user_id": str(item["user_id"])},
            {**item, "user_id": None},
            {**item, "items": ",".join(str(track) for track in item["items"])},
            {**item, "items": [*item["items"][:-1], "x"]},
            {key: value for key, value in item.items() if key != "user_id"},
        ]
    else:
        variants += [
            {**item, "id": str(item["id"])},
            {**item, "id": -1},
            {key: value for key, value in item.items() if key != "id"},
        ]
    if entity == "users":
        variants += [{**item, "email": 12345}, {**item, "first_name": None}]
    if entity == "tracks":
        variants += [{**item, "duration": "abc"}, {**item, "duration": 215}, {**item, "name": 3.5}]
    return variants


@dataclass
class FaultInjector:
    """Production-like misbehaviour, at configured probabilities, counted.

    `probabilities` maps names of FAULT_NAMES to probabilities. `api-5xx` (503 or 500),
    `api-429` (with `Retry-After: retry_after`) and `api-timeout` (answer only after
    `timeout_delay` seconds, longer than a client's read timeout should be) are drawn per
    request from a seeded RNG, at most one per request, so a retry can succeed. `poison` is
    the probability that an item is malformed; it is a function of (seed, entity, index), so
    fetching a page again serves the same poison, as a real bad record would.
    """

    probabilities: dict[str, float]
    seed: int = 0
    retry_after: int = 1
    timeout_delay: float = 2.0
    injected: dict[str, int] = field(init=False)
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.probabilities) - set(FAULT_NAMES)
        if unknown:
            raise ValueError(f"unknown fault names {sorted(unknown)}; known: {FAULT_NAMES}")
        for name, probability in self.probabilities.items():
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"probability of {name} must be within 0..1, got {probability}")
        if sum(self.probabilities.get(name, 0.0) for name in _REQUEST_FAULTS) > 1.0:
            raise ValueError("the request-level fault probabilities add up to more than 1")
        if self.retry_after < 0 or self.timeout_delay < 0:
            raise ValueError("retry_after and timeout_delay must not be negative")
        self.injected = dict.fromkeys(FAULT_NAMES, 0)
        self._rng = random.Random(self.seed)  # noqa: S311 - chaos, not cryptography
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, specs: Sequence[str], **options: Any) -> FaultInjector:
        """Build from `NAME=PROBABILITY` strings, as given on the command line."""
        probabilities: dict[str, float] = {}
        for spec in specs:
            name, sep, value = spec.partition("=")
            if not sep:
                raise ValueError(f"fault spec must look like NAME=PROBABILITY, got {spec!r}")
            probabilities[name.strip()] = float(value)
        return cls(probabilities, **options)

    def _count(self, name: str, times: int = 1) -> None:
        with self._lock:
            self.injected[name] += times

    def decide_request(self) -> FaultDecision | None:
        """Draw the fault of one request (or None), and count it."""
        with self._lock:
            draw = self._rng.random()
            threshold = 0.0
            for name in _REQUEST_FAULTS:
                threshold += self.probabilities.get(name, 0.0)
                if draw < threshold:
                    self.injected[name] += 1
                    if name == "api-5xx":
                        return FaultDecision(name, self._rng.choice((503, 500)))
                    return FaultDecision(name, 429 if name == "api-429" else 200)
        return None

    def is_poisoned(self, entity: str, index: int) -> bool:
        """Whether the item at `index` is served malformed; the same answer every time."""
        probability = self.probabilities.get("poison", 0.0)
        if probability <= 0.0:
            return False
        return _stable_int(self.seed, "poison", entity, index) < probability * 2.0**64

    def poison_item(self, entity: str, index: int, item: dict[str, Any]) -> Any:
        """The malformed version of `item`: always the same variant for (seed, entity, index)."""
        variants = _poison_variants(entity, item)
        return variants[_stable_int(self.seed, "variant", entity, index) % len(variants)]

    def poison_page(self, entity: str, start: int, items: list[dict[str, Any]]) -> list[Any]:
        """`items` (served from index `start`) with the poisoned ones replaced, counted."""
        served: list[Any] = []
        poisoned = 0
        for index, item in enumerate(items, start):
            if self.is_poisoned(entity, index):
                served.append(self.poison_item(entity, index, item))
                poisoned += 1
            else:
                served.append(item)
        if poisoned:
            self._count("poison", poisoned)
        return served

    def content_page(self, entity: str, start: int, items: list[Any]) -> list[Any]:
        """`items` with the content faults applied (`localcloud/content_faults.py`), counted."""
        return apply_content_faults(
            self.probabilities, self.seed, entity, start, items, self._count
        )


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


class _UsersPage(BaseModel):
    items: list[User]
    total: int
    page: int
    size: int
    pages: int


class _TracksPage(BaseModel):
    items: list[Track]
    total: int
    page: int
    size: int
    pages: int


class _ListenHistoryPage(BaseModel):
    items: list[ListenHistory]
    total: int
    page: int
    size: int
    pages: int


_PAGE_MODELS: Final[dict[str, type[BaseModel]]] = {
    "users": _UsersPage,
    "tracks": _TracksPage,
    "listen_history": _ListenHistoryPage,
}

PageParam = Annotated[int, Query(ge=1, description="Page number")]
SizeParam = Annotated[int, Query(ge=1, le=100, description="Page size")]


def _fault_response(fault: FaultDecision, faults: FaultInjector) -> Response | None:
    """The error answer of a request-level fault; None when the request must still answer."""
    if fault.name == "api-429":
        return JSONResponse(
            {"detail": "Too Many Requests"},
            status_code=429,
            headers={"Retry-After": str(faults.retry_after)},
        )
    if fault.status_code == 503:
        return JSONResponse({"detail": "Service Unavailable"}, status_code=503)
    if fault.status_code == 500:  # what Starlette answers for an unhandled exception
        return PlainTextResponse("Internal Server Error", status_code=500)
    return None


def build_app(
    records: int = 1000,
    seed: int = 0,
    faults: FaultInjector | None = None,
    source_faults: SourceFaults | None = None,
) -> FastAPI:
    """The MooVitamix API over `records` lazily generated items per resource.

    Items are returned as raw JSON (no response model), so poisoned items reach the client
    as served; the page models only document the contract in `/openapi.json`.
    `source_faults` (localcloud/source_faults.py) make one resource misbehave deterministically.
    """
    if records < 0:
        raise ValueError(f"records must not be negative, got {records}")
    app = FastAPI(title="MooVitamix", version="1.1", description="A music recommendation system")

    @app.get("/")
    async def docs_redirect() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    def add_endpoint(entity: str) -> None:
        async def endpoint(page: PageParam = 1, size: SizeParam = 100) -> Response:
            if faults is not None:
                fault = faults.decide_request()
                if fault is not None:
                    if fault.name == "api-timeout":
                        await asyncio.sleep(faults.timeout_delay)
                    else:
                        answer = _fault_response(fault, faults)
                        if answer is not None:
                            return answer
            if source_faults is not None:
                faulted = source_faults.respond(
                    entity,
                    page,
                    size,
                    records,
                    lambda name, index: generate_item(name, index, records, seed),
                )
                if faulted is not None:
                    return faulted
            body = page_body(entity, page, size, records, seed)
            if faults is not None:
                body["items"] = faults.poison_page(entity, (page - 1) * size, body["items"])
                body["items"] = faults.content_page(entity, (page - 1) * size, body["items"])
            return JSONResponse(body)

        app.add_api_route(
            f"/{entity}",
            endpoint,
            methods=["GET"],
            tags=["HTTP methods"],
            name=f"get_{entity}",
            responses={200: {"model": _PAGE_MODELS[entity]}},
        )

    for entity in ENTITIES:
        add_endpoint(entity)
    return app


# --------------------------------------------------------------------------------------------
# A server in a thread, for tests and the local cloud
# --------------------------------------------------------------------------------------------


class FakeApiServer:
    """Serve `build_app(...)` with uvicorn in a daemon thread; a context manager.

    The socket is bound before the thread starts, so `port=0` picks a free port with no race,
    and `url` is known as soon as `start()` returns.
    """

    def __init__(
        self,
        records: int = 1000,
        seed: int = 0,
        faults: FaultInjector | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        source_faults: SourceFaults | None = None,
    ) -> None:
        self.records = records
        self.seed = seed
        self.faults = faults
        self.source_faults = source_faults
        self.host = host
        self.port = port
        self.app = build_app(records=records, seed=seed, faults=faults, source_faults=source_faults)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321`; valid once started."""
        if self._server is None:
            raise RuntimeError("FakeApiServer is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeApiServer:
        """Bind, serve in a daemon thread, and return once the API answers."""
        if self._server is not None:
            raise RuntimeError("FakeApiServer is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP, or asyncio skips TCP_NODELAY on accepted connections, and every
        # keep-alive request then waits ~40 ms for a delayed ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fakeapi:{self.port}", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        try:
            self._wait_until_answering(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_answering(self, timeout: float) -> None:
        assert self._server is not None
        assert self._thread is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError("the fake API server thread died while starting")
            if self._server.started:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=2)
                try:
                    connection.request("GET", "/openapi.json")
                    if connection.getresponse().status == 200:
                        return
                except OSError:
                    pass
                finally:
                    connection.close()
            time.sleep(0.01)
        raise TimeoutError(f"the fake API did not answer on {self.url} within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit, wait for the thread; idempotent."""
        server, thread, sock = self._server, self._thread, self._socket
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        if sock is not None:
            sock.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.fakeapi",
        description=(
            "Serve a MooVitamix-compatible fake API in the foreground: GET /users, /tracks and "
            "/listen_history (page >= 1, size 1..100), data generated lazily and "
            "deterministically from --seed, with the contract's quirks."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=1000, help="items per resource")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same data")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=P",
        help=f"inject a fault with probability P; NAME is one of {', '.join(FAULT_NAMES)}; "
        "repeatable. Content faults (per item, the same on every fetch): "
        + "; ".join(f"{name}: {text}" for name, text in CONTENT_FAULTS.items()),
    )
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument(
        "--source-fault",
        action="append",
        default=[],
        metavar="NAME[@RESOURCE]",
        help="make RESOURCE (default users) misbehave the same way on every request; "
        "repeatable; NAME is one of: " + "; ".join(describe()),
    )
    parser.add_argument(
        "--drip-interval", type=float, default=3.0, help="seconds between bytes of slow-drip"
    )
    parser.add_argument(
        "--delete-front", type=int, default=20, help="rows delete-front removes after page 1"
    )
    parser.add_argument(
        "--huge-page-mb", type=int, default=100, help="megabytes of padding of huge-page"
    )
    parser.add_argument(
        "--retry-after", type=int, default=1, help="Retry-After seconds of api-429 answers"
    )
    parser.add_argument(
        "--timeout-delay", type=float, default=2.0, help="seconds an api-timeout stalls"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn log level",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m localcloud.fakeapi`."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.records < 0:
        parser.error("--records must not be negative")
    faults = None
    if args.fault:
        try:
            faults = FaultInjector.parse(
                args.fault,
                seed=args.fault_seed,
                retry_after=args.retry_after,
                timeout_delay=args.timeout_delay,
            )
        except ValueError as error:
            parser.error(str(error))
    source_faults = None
    if args.source_fault:
        try:
            source_faults = SourceFaults.parse(
                args.source_fault,
                drip_interval=args.drip_interval,
                delete_front=args.delete_front,
                huge_page_bytes=args.huge_page_mb * 1024 * 1024,
            )
        except ValueError as error:
            parser.error(str(error))
    app = build_app(
        records=args.records, seed=args.seed, faults=faults, source_faults=source_faults
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
