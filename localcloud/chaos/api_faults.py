"""Faults of the fake API: the built-in API's own `FaultInjector` misbehaves, and counts.

`api-5xx`, `api-429`, `api-timeout`, `poison` and the content faults of
`localcloud/fakeapi/content_faults.py`; absent when the run reads an external API (`--api-url`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from localcloud.chaos.fault import Fault
from localcloud.fakeapi.content_faults import CONTENT_FAULTS

API_FAULTS: Final = ("api-5xx", "api-429", "api-timeout", "poison", *CONTENT_FAULTS)


@dataclass
class ApiFault(Fault):
    """Injected by the built-in fake API's FaultInjector; counted there."""


class Api5xx(ApiFault):
    name = "api-5xx"
    default_probability = 0.05
    description = "the API answers 500 or 503"


class Api429(ApiFault):
    name = "api-429"
    default_probability = 0.02
    description = "the API answers 429 with Retry-After"


class ApiTimeout(ApiFault):
    name = "api-timeout"
    default_probability = 0.02
    description = "the API stalls past the client's read timeout"


class Poison(ApiFault):
    name = "poison"
    default_probability = 0.01
    description = "the API serves records that break the contract"


def _content_fault(fault_name: str, text: str) -> type[ApiFault]:
    """An ApiFault class for one content fault of `localcloud/fakeapi/content_faults.py`."""
    return type(
        f"Content{fault_name.title().replace('-', '')}",
        (ApiFault,),
        {"name": fault_name, "default_probability": 0.05, "description": text, "in_all": False},
    )


CONTENT_FAULT_CLASSES: Final[tuple[type[ApiFault], ...]] = tuple(
    _content_fault(name, text) for name, text in CONTENT_FAULTS.items()
)
