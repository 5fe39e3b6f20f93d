"""Production-like misbehaviour of the fake API, drawn per request or per item, counted.

Request-level faults (`api-5xx`, `api-429`, `api-timeout`) are drawn from a seeded RNG, at most
one per request, so a retry can succeed; `poison` and the content faults
(`localcloud/fakeapi/content_faults.py`) are a function of `(seed, entity, index)`, so fetching
a page again serves the same bad items, as a real bad record would. What makes one resource
misbehave on every request is `localcloud/fakeapi/source_faults.py`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from localcloud.fakeapi.content_faults import CONTENT_FAULTS, apply_content_faults
from localcloud.fakeapi.data import stable_int

FAULT_NAMES: Final = ("api-5xx", "api-429", "api-timeout", "poison", *CONTENT_FAULTS)
_REQUEST_FAULTS: Final = ("api-5xx", "api-429", "api-timeout")


class FaultDecision(NamedTuple):
    """What one request suffers: the fault's name and the status it answers with."""

    name: str
    status_code: int


def poison_variants(entity: str, item: dict[str, Any]) -> list[Any]:
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
        return stable_int(self.seed, "poison", entity, index) < probability * 2.0**64

    def poison_item(self, entity: str, index: int, item: dict[str, Any]) -> Any:
        """The malformed version of `item`: always the same variant for (seed, entity, index)."""
        variants = poison_variants(entity, item)
        return variants[stable_int(self.seed, "variant", entity, index) % len(variants)]

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
        """`items` with the content faults applied (`content_faults.py`), counted."""
        return apply_content_faults(
            self.probabilities, self.seed, entity, start, items, self._count
        )
