"""Live progress of a local run, from the pipeline's own structured log events.

The handlers log "page published" and "batch loaded" with their counts; `ProgressHandler`
turns them into (step, entity, count, total) updates for the command's progress display.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

ProgressCallback = Callable[[str, str, int, int | None], None]
"""(step, entity, count, total) -> None; step is "fetched" or "loaded"."""


class ProgressHandler(logging.Handler):
    """Turns the pipeline's own structured log events into progress updates."""

    def __init__(self, callback: ProgressCallback) -> None:
        super().__init__(level=logging.INFO)
        self.callback = callback
        self.fetched: dict[str, int] = {}
        self.loaded: dict[str, int] = {}
        self._written: dict[tuple[str, str], int] = {}  # (sink, entity) -> records written
        self._quarantined: dict[str, int] = {}
        self._counts_lock = threading.Lock()

    def _count_loaded(self, step: str, sink: str, entity: str, value: int) -> int:
        """Records of `entity` loaded so far: written by the slowest sink, or quarantined.

        With several sinks a record is written once per sink, so written counts are kept per
        sink and the smallest is the run's progress.
        """
        if step == "written":
            self._written[(sink, entity)] = self._written.get((sink, entity), 0) + int(value)
        else:
            self._quarantined[entity] = self._quarantined.get(entity, 0) + int(value)
        written = [count for (_, name), count in self._written.items() if name == entity]
        return min(written, default=0) + self._quarantined.get(entity, 0)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        with self._counts_lock:
            if message == "page published":
                entity = str(getattr(record, "entity", ""))
                self.fetched[entity] = self.fetched.get(entity, 0) + int(
                    getattr(record, "items", 0)
                )
                total = getattr(record, "total", None)
                self.callback("fetched", entity, self.fetched[entity], total)
            elif message == "batch loaded":
                for counts in (getattr(record, "counts", None) or {}).values():
                    for name, value in counts.items():
                        parts = name.split(".")
                        if parts[0] in ("written", "quarantined") and parts[1] != "ingest":
                            entity = parts[-1]
                            self.loaded[entity] = self._count_loaded(
                                parts[0], parts[1], entity, value
                            )
                            self.callback("loaded", entity, self.loaded[entity], None)
