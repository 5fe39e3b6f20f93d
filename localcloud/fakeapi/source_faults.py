"""Deterministic source-side faults of the fake API: a source that misbehaves the same way
every time it is asked, so an end-to-end test can assert exactly what the run makes of it.

Unlike `FaultInjector` (production-like noise drawn at random per request), each fault here is
switched on for one resource and always happens, the way a broken or changing API behaves;
`SOURCE_FAULTS` says what each one serves.

A fault is named `NAME` (on `users`) or `NAME@RESOURCE`; several may be switched on at once,
on different resources. `injected` counts how often each one was served.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi.responses import JSONResponse, Response, StreamingResponse

SOURCE_FAULTS: Final[dict[str, str]] = {
    "truncated-last-page": "the last announced page comes back empty (total, pages unchanged)",
    "delete-front": "once page 1 was served, its first --delete-front rows are deleted: total "
    "drops and every later page shifts (any first request of page 1 counts, a probe's too)",
    "slow-drip": "headers at once, then the body one byte every --drip-interval seconds",
    "growing-pages": "every page announces one more page (and a larger total) and repeats the "
    "items of page 1",
    "ignore-size": "every page holds 10 x size items from its offset (pages overlap); the "
    "envelope still echoes size",
    "huge-page": "page 1 carries --huge-page-mb of padding, streamed without Content-Length",
    "nested-json": "page 2 holds an item nested 100,000 levels deep",
    "overflow-timestamp": "the item at index 7 has updated_at 9999-12-31T23:00:00-05:00, "
    "past year 9999 in UTC",
}
SOURCE_FAULT_NAMES: Final = tuple(SOURCE_FAULTS)
OVERFLOW_TIMESTAMP: Final = "9999-12-31T23:00:00-05:00"
"""Valid ISO 8601, but past year 9999 once converted to UTC."""
IGNORED_SIZE_FACTOR: Final = 10

ItemSource = Callable[[str, int], dict[str, Any]]
"""(entity, index) -> the item at that index of the unfaulted data."""


@dataclass
class SourceFaults:
    """Which resource suffers which source fault, and the faults' parameters."""

    faults: dict[str, str]
    """fault name -> resource it applies to."""
    delete_front: int = 20
    drip_interval: float = 3.0
    huge_page_bytes: int = 100 * 1024 * 1024
    nesting_depth: int = 100_000
    overflow_index: int = 7
    injected: Counter[str] = field(default_factory=Counter)
    _page_one_served: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(SOURCE_FAULT_NAMES)
        if unknown:
            raise ValueError(
                f"unknown source faults {sorted(unknown)}; known: {', '.join(SOURCE_FAULT_NAMES)}"
            )
        if self.delete_front < 1 or self.drip_interval <= 0 or self.nesting_depth < 1:
            raise ValueError("delete_front, drip_interval and nesting_depth must be positive")

    @classmethod
    def parse(cls, specs: Iterable[str], **options: Any) -> SourceFaults:
        """Build from `NAME` or `NAME@RESOURCE` strings, as given on the command line."""
        faults: dict[str, str] = {}
        for spec in specs:
            name, _, resource = spec.partition("@")
            faults[name.strip()] = resource.strip() or "users"
        return cls(faults, **options)

    def on(self, name: str, entity: str) -> bool:
        return self.faults.get(name) == entity

    def _count(self, name: str) -> None:
        with self._lock:
            self.injected[name] += 1

    # -- items ---------------------------------------------------------------------------

    def item(self, entity: str, index: int, generated: dict[str, Any]) -> dict[str, Any]:
        """The item served at `index`: the generated one, or its faulted version."""
        if self.on("overflow-timestamp", entity) and index == self.overflow_index:
            self._count("overflow-timestamp")
            return {**generated, "updated_at": OVERFLOW_TIMESTAMP}
        return generated

    # -- pages ---------------------------------------------------------------------------

    def respond(
        self, entity: str, page: int, size: int, records: int, items: ItemSource
    ) -> Response | None:
        """The faulted answer to `GET /<entity>?page=&size=`, or None to answer normally."""
        if self.on("slow-drip", entity):
            self._count("slow-drip")
            body = _encode(_envelope(entity, page, size, records, items, self))
            return StreamingResponse(self._drip(body), media_type="application/json")
        if self.on("huge-page", entity) and page == 1:
            self._count("huge-page")
            return StreamingResponse(
                self._padded(_envelope(entity, page, size, records, items, self)),
                media_type="application/json",
            )
        if self.on("nested-json", entity) and page == 2:
            self._count("nested-json")
            envelope = _envelope(entity, page, size, records, items, self)
            depth = self.nesting_depth
            nested = b"[" * depth + b"]" * depth
            body = _encode(envelope).replace(b'"items":[', b'"items":[' + nested + b",", 1)
            return Response(body, media_type="application/json")
        if self.on("truncated-last-page", entity):
            envelope = _envelope(entity, page, size, records, items, self)
            if page == envelope["pages"] and page > 1:
                self._count("truncated-last-page")
                envelope["items"] = []
            return JSONResponse(envelope)
        if self.on("delete-front", entity):
            with self._lock:
                deleted = entity in self._page_one_served
                if page == 1:
                    self._page_one_served.add(entity)
            if deleted:
                self._count("delete-front")
            offset = self.delete_front if deleted else 0
            return JSONResponse(_envelope(entity, page, size, records, items, self, offset))
        if self.on("growing-pages", entity):
            self._count("growing-pages")
            envelope = _envelope(entity, 1, size, records, items, self)
            envelope.update(page=page, total=size * (page + 1), pages=page + 1)
            return JSONResponse(envelope)
        if self.on("ignore-size", entity):
            self._count("ignore-size")
            envelope = _envelope(entity, page, size * IGNORED_SIZE_FACTOR, records, items, self)
            start = (page - 1) * size
            stop = min(start + size * IGNORED_SIZE_FACTOR, records)
            envelope.update(
                items=[self.item(entity, i, items(entity, i)) for i in range(start, stop)],
                size=size,
                pages=math.ceil(records / size),
            )
            return JSONResponse(envelope)
        if entity in self.faults.values():  # item faults only
            return JSONResponse(_envelope(entity, page, size, records, items, self))
        return None

    async def _drip(self, body: bytes) -> AsyncIterator[bytes]:
        for index in range(len(body)):
            yield body[index : index + 1]
            await asyncio.sleep(self.drip_interval)

    async def _padded(self, envelope: dict[str, Any]) -> AsyncIterator[bytes]:
        head = _encode(envelope)[:-1] + b',"padding":"'
        yield head
        chunk = b"x" * (1024 * 1024)
        left = self.huge_page_bytes
        while left > 0:
            yield chunk[:left]
            left -= len(chunk)
            await asyncio.sleep(0)
        yield b'"}'


def _envelope(
    entity: str,
    page: int,
    size: int,
    records: int,
    items: ItemSource,
    faults: SourceFaults,
    offset: int = 0,
) -> dict[str, Any]:
    """The contract's page over the rows `offset..records - 1` (rows before it deleted)."""
    total = records - offset
    start = (page - 1) * size + offset
    stop = min(start + size, records)
    return {
        "items": [faults.item(entity, i, items(entity, i)) for i in range(start, stop)],
        "total": total,
        "page": page,
        "size": size,
        "pages": math.ceil(total / size),
    }


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def describe() -> Sequence[str]:
    """One line per fault, for `--help`."""
    return [f"{name}: {text}" for name, text in SOURCE_FAULTS.items()]
