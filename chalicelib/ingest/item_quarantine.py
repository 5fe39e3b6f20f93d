"""Quarantine one served item the ingest cannot publish, with its reason and where it was.

The item is kept as served (JSON), never dropped and never published; the log line names its
page and key (never its payload) so an operator can find it in the source.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from chalicelib.deadletter.quarantine import QuarantinedRecord
from chalicelib.ingest.context import IngestDependencies
from chalicelib.ingest.page import Page
from chalicelib.model.contract import describe_validation_error
from chalicelib.observability.logging import logger


def quarantine_item(
    deps: IngestDependencies, run_id: str, page: Page, position: int, raw: Any, error: Exception
) -> None:
    """Keep one item that cannot be published, with its reason; log it once, with its page and
    key, so an operator can find it in the source."""
    origin = f"ingest-p{page.number}-i{position}"
    reason = (
        describe_validation_error(error)
        if isinstance(error, ValidationError)
        else f"cannot be processed: {type(error).__name__}: {snippet(str(error))}"
    )
    deps.quarantine.put(
        QuarantinedRecord(
            run_id=run_id,
            entity=page.resource,
            origin=origin,
            reason=reason,
            payload=_payload_bytes(raw),
        )
    )
    logger.warning(
        "record quarantined",
        extra={
            "step": "ingest",
            "entity": page.resource,
            "origin": origin,
            "page": page.number,
            "url": page.url,
            "key": _raw_key(page.resource, raw),
            "reason": reason[:300],
        },
    )


def _payload_bytes(raw: Any) -> bytes:
    """The item as served, as JSON; an item JSON cannot re-encode (nested too deeply for the
    encoder) is kept as a description, so its quarantine never fails."""
    try:
        return json.dumps(raw, ensure_ascii=True).encode()
    except (ValueError, TypeError, RecursionError) as error:
        return json.dumps(
            {"unencodable_item": f"{type(raw).__name__}", "error": type(error).__name__}
        ).encode()


def _raw_key(resource: str, raw: Any) -> str | None:
    """The item's key as served (it may be invalid), for logs: `id`, or `user_id@created_at`."""
    if not isinstance(raw, dict):
        return None
    fields = ("user_id", "created_at") if resource == "listen_history" else ("id",)
    parts = [raw.get(name) for name in fields]
    if all(part is None for part in parts):
        return None
    return snippet("@".join(str(part) for part in parts))


def snippet(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
