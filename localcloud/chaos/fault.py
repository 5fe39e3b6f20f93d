"""The fault base class: when to inject one kind of misbehaviour and how often it was.

Each fault is drawn from a generator seeded with the run's seed and its name, fires at its
first opportunity, then with its probability; `install` puts it where it acts (a botocore hook,
a wrapper of the load handler, the ingest's context), by way of the run's `Chaos`.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from localcloud.chaos.run import Chaos


class SimulatedCrash(Exception):
    """A handler "died" (chaos): the driver treats it as Lambda treats a crashed invocation."""


@dataclass
class Fault:
    """One kind of misbehaviour: when to inject it and how often it was injected."""

    name: ClassVar[str] = ""
    default_probability: ClassVar[float] = 0.1
    description: ClassVar[str] = ""
    in_all: ClassVar[bool] = True
    """Part of `--chaos all`. Content faults are not: they change what the source holds, so
    the stores cannot end as in a clean run."""

    probability: float
    seed: int = 0
    injected: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.seed}:{self.name}")  # noqa: S311 - chaos, not crypto

    def decide(self) -> bool:
        """Whether to inject now: always at the first opportunity, then with `probability`."""
        with self._lock:
            if self.probability <= 0:
                return False
            if self.injected == 0 or self._rng.random() < self.probability:
                self.injected += 1
                return True
            return False

    def draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def count(self) -> None:
        with self._lock:
            self.injected += 1

    def install(self, chaos: Chaos) -> None:
        """Register hooks (AWS faults) or wrappers (trigger faults)."""
