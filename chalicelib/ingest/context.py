"""What one ingest invocation works with, and what it counts per resource.

Shared by the sequential run (`chalicelib/ingest/run.py`), the page pipeline
(`chalicelib/ingest/pages.py`) and the fan-out worker (`chalicelib/ingest/worker.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import requests

from chalicelib.deadletter.quarantine import Quarantine
from chalicelib.ingest.changes import ChangeDetector
from chalicelib.ingest.fanout import WorkQueue
from chalicelib.runs.ledger import RunProgress
from chalicelib.runs.manifest import RunManifests
from chalicelib.settings import Settings
from chalicelib.stream.publisher import KinesisPublisher


@dataclass
class IngestDependencies:
    settings: Settings
    session: requests.Session
    publisher: KinesisPublisher
    quarantine: Quarantine
    manifests: RunManifests
    progress: RunProgress
    """Checkpoints and page ledger: what a run resumes from and is reconciled by."""
    changes: ChangeDetector | None = None
    """Skips records every sink already stores; None publishes everything."""
    work_queue: WorkQueue | None = None
    """Where a resource larger than `pages_per_worker` pages is split; None never splits."""


@dataclass
class ResourceCounts:
    fetched: int = 0
    published: int = 0
    quarantined: int = 0
    pages: int = 0
    unchanged: int = 0
    work_items: int = 0
    """Work items the resource was split into (fan-out); its records are counted by them."""
    put_records_failed: int = 0
    error: str | None = None


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
