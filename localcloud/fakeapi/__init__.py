"""A MooVitamix-compatible fake API: lazy, deterministic data, the contract's quirks, faults.

The pipeline is also pointed at the original upstream app, so this fake serves exactly the
contract of `docs/source-api.md` (same paths, query parameters, page envelope, 422 bodies,
`/` -> `/docs`), and nothing upstream lacks. What it adds is control:

* data is a pure function of `(seed, entity, index)`, computed when a page is served, so a
  test can compare the stores with `iter_items` and `records` can be in the millions
  (`data.py`);
* the quirks the contract warns about (timestamps without a fraction, `updated_at` earlier
  than `created_at`, several listen-history rows per user, hostile text) occur at low,
  deterministic rates, so every run exercises them (`data.py`);
* `FaultInjector` adds what a production deployment does now and then (5xx, 429, slow
  answers, malformed items), per request at random, with counters for the tests
  (`faults.py`, `content_faults.py`); `SourceFaults` makes one resource misbehave on every
  request (`source_faults.py`).

`app.py` is the ASGI app, `server.py` serves it in a thread (tests, the local cloud), `cli.py`
in the foreground: `python -m localcloud.fakeapi --records 5000 --port 8000`.
"""

from localcloud.fakeapi.app import build_app
from localcloud.fakeapi.cli import main
from localcloud.fakeapi.data import (
    ANCHOR,
    HOSTILE_STRINGS,
    generate_item,
    id_for_index,
    iter_items,
    page_body,
)
from localcloud.fakeapi.faults import FAULT_NAMES, FaultDecision, FaultInjector
from localcloud.fakeapi.server import FakeApiServer
from localcloud.fakeapi.source_faults import SOURCE_FAULT_NAMES, SourceFaults

__all__ = [
    "ANCHOR",
    "FAULT_NAMES",
    "HOSTILE_STRINGS",
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
