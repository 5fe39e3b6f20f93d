"""What the local cloud's stores hold, read back for the user (`run --dump`) and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from chalicelib import wiring
from chalicelib.model.contract import ENTITIES, entity_key
from chalicelib.settings import Settings


def stored_items(settings: Settings, sink_name: str, entity: str) -> list[dict[str, Any]]:
    """Every row of one sink and entity in the API's shape, sorted by key."""
    sink = next(s for s in wiring.build_sinks(settings) if s.name == sink_name)
    rows: list[dict[str, Any]] = sink.rows(entity)  # type: ignore[attr-defined]
    return sorted(rows, key=lambda item: entity_key(entity, item))


def dump(settings: Settings, directory: Path) -> list[Path]:
    """Write `DIR/<sink>/<entity>.jsonl`, one stored row per line, and
    `DIR/quarantine.jsonl`, one quarantined record (payload and reason) per line."""
    written: list[Path] = []
    directory.mkdir(parents=True, exist_ok=True)
    quarantine_path = directory / "quarantine.jsonl"
    with quarantine_path.open("wb") as handle:
        for record in wiring.quarantine(settings).records():
            document = orjson.loads(record.to_json())
            handle.write(
                orjson.dumps(
                    {
                        "run_id": record.run_id,
                        "entity": record.entity,
                        "origin": record.origin,
                        "reason": record.reason,
                        "payload": document["payload"],
                        "payload_base64": document["payload_base64"],
                    },
                    option=orjson.OPT_SORT_KEYS,
                )
                + b"\n"
            )
    written.append(quarantine_path)
    for sink in wiring.build_sinks(settings):
        folder = directory / sink.name
        folder.mkdir(parents=True, exist_ok=True)
        for entity in ENTITIES:
            path = folder / f"{entity}.jsonl"
            with path.open("wb") as handle:
                for item in stored_items(settings, sink.name, entity):
                    handle.write(orjson.dumps(item) + b"\n")
            written.append(path)
    return written
