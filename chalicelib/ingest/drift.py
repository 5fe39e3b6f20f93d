"""Schema drift: fields the source serves that the contract does not know.

The contract ignores unknown fields (`chalicelib/model/contract.py`): an item that only gained a
field stays valid and is stored with the contract's fields. Nothing of an unknown field is
stored, in either store (the stores have a column or attribute per contract field only); what
is kept is the report of it: per run and resource, the field names (a string set in the run
manifest, `schema_drift.<entity>`, which every ingest invocation and fan-out worker adds to),
the number of items that carried any (`unknown_fields.<entity>`), the `UnknownFields` metric,
and one warning in the log per run, resource and new field set in a process. An item that
breaks the contract (a renamed field) is quarantined with its whole payload, unknown fields
included, and its new field name is reported as drift as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from chalicelib.model.contract import unknown_fields
from chalicelib.observability.logging import logger
from chalicelib.observability.metrics import record_unknown_fields
from chalicelib.runs.manifest import RunManifests

MAX_FIELDS: Final = 50
"""Field names reported per resource and page: a source sending random keys cannot bloat the
manifest (an item holds at most 400 KB)."""

_warned: set[tuple[str, str, frozenset[str]]] = set()


def page_drift(entity: str, items: Iterable[Any]) -> tuple[Counter[str], int]:
    """(items per unknown field, items with any unknown field) of one page."""
    fields: Counter[str] = Counter()
    items_with = 0
    for item in items:
        unknown = unknown_fields(entity, item)
        if unknown:
            items_with += 1
            fields.update(unknown)
    return fields, items_with


def report_drift(
    manifests: RunManifests, run_id: str, entity: str, fields: Counter[str], items_with: int
) -> None:
    """Add a page's unknown fields to the run manifest, the metric and the log."""
    if not items_with:
        return
    names = sorted(fields)[:MAX_FIELDS]
    manifests.add_to_set(run_id, f"schema_drift.{entity}", names)
    manifests.add_counts(run_id, {f"unknown_fields.{entity}": items_with})
    record_unknown_fields(entity, items_with)
    marker = (run_id, entity, frozenset(names))
    if marker not in _warned:
        _warned.add(marker)
        logger.warning(
            "schema drift: the source serves fields the contract does not know; they are not "
            "stored",
            extra={
                "step": "ingest",
                "run_id": run_id,
                "entity": entity,
                "unknown_fields": {name: fields[name] for name in names},
            },
        )
