"""Every fault by its --chaos name, and the SPEC that picks them and their probabilities."""

from __future__ import annotations

from typing import Final

from localcloud.chaos.api_faults import CONTENT_FAULT_CLASSES, Api5xx, Api429, ApiTimeout, Poison
from localcloud.chaos.aws_faults import DynamoDBThrottle, KinesisPartial, KinesisThrottle
from localcloud.chaos.fault import Fault
from localcloud.chaos.trigger_faults import (
    ConsumerCrash,
    DuplicateDelivery,
    PostgresDisconnect,
    ProducerTimeout,
)


class ChaosSpecError(ValueError):
    """The --chaos SPEC names an unknown fault or a probability outside 0..1."""


FAULTS: Final[dict[str, type[Fault]]] = {
    fault.name: fault
    for fault in (
        Api5xx,
        Api429,
        ApiTimeout,
        KinesisPartial,
        KinesisThrottle,
        DynamoDBThrottle,
        PostgresDisconnect,
        ConsumerCrash,
        DuplicateDelivery,
        ProducerTimeout,
        Poison,
    )
}
"""Every fault, by its --chaos name."""
FAULTS.update({fault.name: fault for fault in CONTENT_FAULT_CLASSES})


def parse_spec(spec: str) -> dict[str, float]:
    """`all` or `NAME[,NAME=p...]` -> {name: probability}; raises ChaosSpecError."""
    probabilities: dict[str, float] = {}
    for part in (piece.strip() for piece in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        names = [n for n, f in FAULTS.items() if f.in_all] if name == "all" else [name]
        for each in names:
            if each not in FAULTS:
                raise ChaosSpecError(
                    f"unknown fault {each!r} in --chaos; known: all, {', '.join(FAULTS)}"
                )
            if sep:
                try:
                    probability = float(value)
                except ValueError as error:
                    raise ChaosSpecError(f"{part!r}: the probability is not a number") from error
            else:
                probability = FAULTS[each].default_probability
            if not 0.0 <= probability <= 1.0:
                raise ChaosSpecError(f"{part!r}: the probability must be within 0..1")
            probabilities[each] = probability
    if not probabilities:
        raise ChaosSpecError("--chaos needs `all` or at least one fault name")
    return probabilities
