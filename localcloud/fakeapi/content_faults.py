"""Content faults of the fake API: pages that parse, with items a real source gets wrong.

The request-level faults (`api-5xx`, ...) and `poison` live in `localcloud/fakeapi/faults.py`;
these change what a well-formed page holds, the way a changing or careless source does, to prove the
pipeline's version rule, keys, quality gate and schema-drift report end to end. Like `poison`,
whether an item is hit is a pure function of (seed, fault, entity, index), so fetching a page
again serves the same content, and a test can compute what was served.

Faults (name: what the served page holds):
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

CONTENT_FAULTS: Final[dict[str, str]] = {
    "duplicate-item": "an item is served twice on its page: an exact duplicate row takes the "
    "place of the item after it",
    "future-updated-at": "an item's updated_at is 9999-12-31T23:59:59 (a clock gone wrong "
    "upstream)",
    "renamed-field": "a field is renamed (users: email -> e_mail, tracks: name -> title, "
    "listen_history: items -> tracks): the item breaks the contract, and the new name is schema "
    "drift",
    "extra-field": "an item carries a field the contract does not know (`source_region`): "
    "schema drift, the item stays valid",
    "respelled-timestamps": "an item's timestamps are served as another spelling of the same "
    "instant (a +02:00 zone, or a .000 fraction)",
    "same-version-change": "an item's content changes while its updated_at does not (users: "
    "last_name, tracks: album, listen_history: the order of items)",
}
__doc__ = (__doc__ or "") + "\n".join(
    f"* `{name}`: {text}" for name, text in CONTENT_FAULTS.items()
)

FUTURE: Final = "9999-12-31T23:59:59"
RENAMED: Final[dict[str, tuple[str, str]]] = {
    "users": ("email", "e_mail"),
    "tracks": ("name", "title"),
    "listen_history": ("items", "tracks"),
}
EXTRA_FIELD: Final = "source_region"


def is_hit(seed: int, fault: str, entity: str, index: int, probability: float) -> bool:
    """Whether the item at `index` suffers `fault`; the same answer every time."""
    if probability <= 0.0:
        return False
    text = f"{seed}\x1f{fault}\x1f{entity}\x1f{index}".encode()
    draw = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")
    return draw < probability * 2.0**64


def respell(timestamp: str) -> str:
    """Another spelling of the same instant: `.000` added, or the time in a +02:00 zone."""
    if "." not in timestamp:
        return f"{timestamp}.000"
    local = datetime.fromisoformat(timestamp) + timedelta(hours=2)
    return f"{local.isoformat()}+02:00"


def _changed(entity: str, item: dict[str, Any]) -> dict[str, Any]:
    if entity == "users":
        return {**item, "last_name": f"{item['last_name']} Jr."}
    if entity == "tracks":
        return {**item, "album": f"{item['album']} (Remastered)"}
    items = list(reversed(item["items"]))
    return {**item, "items": items if items != item["items"] else [*items, 0]}


def _item_faults(entity: str, item: dict[str, Any], hits: set[str]) -> dict[str, Any]:
    served = dict(item)
    if "same-version-change" in hits:
        served = _changed(entity, served)
    if "respelled-timestamps" in hits:
        served["created_at"] = respell(served["created_at"])
        served["updated_at"] = respell(served["updated_at"])
    if "future-updated-at" in hits:
        served["updated_at"] = FUTURE
    if "extra-field" in hits:
        served[EXTRA_FIELD] = "eu-west"
    if "renamed-field" in hits:
        old, new = RENAMED[entity]
        served = {(new if name == old else name): value for name, value in served.items()}
    return served


def apply_content_faults(
    probabilities: Mapping[str, float],
    seed: int,
    entity: str,
    start: int,
    items: list[Any],
    count: Callable[[str, int], None],
) -> list[Any]:
    """`items` (served from index `start`) as the content faults change them; counted."""
    active = {name: p for name, p in probabilities.items() if name in CONTENT_FAULTS and p > 0}
    if not active:
        return items
    served = list(items)
    counts = dict.fromkeys(active, 0)
    for offset, item in enumerate(items):
        if not isinstance(item, dict):  # poisoned into a non-object: left as it is
            continue
        hits = {
            name
            for name, probability in active.items()
            if name != "duplicate-item" and is_hit(seed, name, entity, start + offset, probability)
        }
        if hits:
            served[offset] = _item_faults(entity, item, hits)
            for name in hits:
                counts[name] += 1
    if "duplicate-item" in active:
        for offset in range(len(served) - 1):
            if is_hit(seed, "duplicate-item", entity, start + offset, active["duplicate-item"]):
                served[offset + 1] = served[offset]
                counts["duplicate-item"] += 1
    for name, times in counts.items():
        if times:
            count(name, times)
    return served
