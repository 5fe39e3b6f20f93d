"""The embedded local cloud: moto for AWS, a fake MooVitamix API, and the Lambda driver.

`LocalCloud` starts the services, points the process's environment at them (the `local` stage
of `.chalice/config.json`, with `AWS_ENDPOINT_URL` set to moto), provisions the stream, tables
and bucket through `infra.provision` (the code path used for AWS), then runs the pipeline by
calling the Chalice handlers exactly as Lambda would.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from chalicelib import aws, wiring
from chalicelib.contract import ENTITIES, entity_key
from chalicelib.settings import Settings, get_settings
from chalicelib.telemetry import SERVICE
from infra.provision import Provisioned, provision
from localcloud.driver import KinesisEventSourceMapping, ShardProgress
from localcloud.fakeapi import FakeApiServer
from localcloud.lambda_runtime import LambdaContext, scheduled_event
from localcloud.services import MotoServer
from localcloud.sqs_driver import SqsEventSourceMapping, WorkerProgress

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"

ProgressCallback = Callable[[str, str, int, int | None], None]
"""(step, entity, count, total) -> None; step is "fetched" or "loaded"."""


def stage_environment(stage: str = "local") -> dict[str, str]:
    """The environment variables a stage of `.chalice/config.json` gives the functions."""
    config = json.loads((PROJECT_ROOT / ".chalice" / "config.json").read_text())
    variables = dict(config.get("environment_variables", {}))
    variables.update(config["stages"][stage].get("environment_variables", {}))
    return {name: str(value) for name, value in variables.items()}


@dataclass
class RunReport:
    """What one local run did, with counts read back from the emulated AWS APIs."""

    run_id: str
    status: str
    entities: dict[str, dict[str, Any]]
    timings: dict[str, float]
    shards: dict[str, ShardProgress] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "status": self.status,
            "run_id": self.run_id,
            "entities": self.entities,
            "timings": self.timings,
        }
        if self.errors:
            summary["errors"] = self.errors
        return summary


class _ProgressHandler(logging.Handler):
    """Turns the pipeline's own structured log events into progress updates."""

    def __init__(self, callback: ProgressCallback) -> None:
        super().__init__(level=logging.INFO)
        self.callback = callback
        self.fetched: dict[str, int] = {}
        self.loaded: dict[str, int] = {}
        self._counts_lock = threading.Lock()

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
                            self.loaded[entity] = self.loaded.get(entity, 0) + int(value)
                            self.callback("loaded", entity, self.loaded[entity], None)


class LocalCloud:
    """Context manager owning the embedded services for one or more runs."""

    def __init__(
        self,
        state_dir: Path,
        *,
        api_url: str | None = None,
        records: int = 1000,
        seed: int = 0,
        shard_count: int = 2,
        extra_env: dict[str, str] | None = None,
        workers: int = 2,
    ) -> None:
        self.state_dir = state_dir
        self.api_url = api_url
        self.records = records
        self.seed = seed
        self.shard_count = shard_count
        self.extra_env = extra_env or {}
        self.workers = workers
        """Concurrent fan-out workers (the SQS trigger's concurrency)."""
        self.shard_positions: dict[str, str] = {}
        """Where the Kinesis trigger stopped on each shard; the next run resumes there."""
        self.moto = MotoServer(state_dir / "moto.log")
        self.fake_api: FakeApiServer | None = None
        self.provisioned: Provisioned | None = None
        self._saved_env: dict[str, str | None] = {}
        self.started_s = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalCloud:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.moto.start()
        try:
            api_url = self.api_url
            if api_url is None:
                self.fake_api = FakeApiServer(records=self.records, seed=self.seed)
                self.fake_api.start()
                api_url = self.fake_api.url
            self._apply_environment(api_url)
            self.provisioned = provision(self.settings, shard_count=self.shard_count)
            self._route_logs()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.started_s = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.fake_api is not None:
            self.fake_api.stop()
            self.fake_api = None
        self.moto.stop()
        self._restore_environment()

    @property
    def settings(self) -> Settings:
        return get_settings()

    def _apply_environment(self, api_url: str) -> None:
        environment = stage_environment("local")
        environment.update(
            {
                "AWS_ENDPOINT_URL": self.moto.url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "PIPELINE_API_URL": api_url,
            }
        )
        environment.update(self.extra_env)
        for name in [*environment, "AWS_PROFILE", "AWS_SESSION_TOKEN"]:
            self._saved_env.setdefault(name, os.environ.get(name))
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.update(environment)
        wiring.reset()

    def _restore_environment(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        wiring.reset()

    def _route_logs(self) -> None:
        """Lambda logs go to a file in the state dir, not to the terminal."""
        pipeline_logger = logging.getLogger(SERVICE)
        formatter = pipeline_logger.handlers[0].formatter if pipeline_logger.handlers else None
        file_handler = logging.FileHandler(self.state_dir / "lambda.log", encoding="utf-8")
        file_handler.setFormatter(formatter or logging.Formatter())
        pipeline_logger.handlers = [file_handler]
        pipeline_logger.propagate = False

    @property
    def log_path(self) -> Path:
        return self.state_dir / "lambda.log"

    # -- one run -----------------------------------------------------------------------------

    def run(self, progress: ProgressCallback | None = None) -> RunReport:
        """Fire the schedule once, drive the stream until drained, and reconcile the counts."""
        import app  # the Chalice app: imported after the environment points at the cloud

        assert self.provisioned is not None
        settings = self.settings
        started = time.monotonic()
        progress_handler = _ProgressHandler(progress or (lambda *_: None))
        pipeline_logger = logging.getLogger(SERVICE)
        pipeline_logger.addHandler(progress_handler)

        producer_done = threading.Event()
        ingest_done = threading.Event()
        ingest_outcome: dict[str, Any] = {}

        def fire_schedule() -> None:
            rule_arn = f"arn:aws:events:{REGION}:123456789012:rule/moovitamix-pipeline-ingest"
            try:
                ingest_outcome["result"] = app.ingest(
                    scheduled_event(rule_arn, REGION), LambdaContext("ingest", region=REGION)
                )
            except Exception as error:
                ingest_outcome["error"] = f"{type(error).__name__}: {error}"
            finally:
                ingest_done.set()

        work = SqsEventSourceMapping(
            sqs=aws.client("sqs"),
            queue_url=self.provisioned.work_queue_url,
            handler=app.ingest_worker,
            concurrency=self.workers,
            region=REGION,
        )

        def run_workers() -> None:
            """Fan-out workers run until the ingest is done and the work queue is empty."""
            try:
                work.run(ingest_done)
            finally:
                producer_done.set()

        mapping = KinesisEventSourceMapping(
            kinesis=aws.client("kinesis"),
            stream_name=settings.stream_name,
            stream_arn=self.provisioned.stream_arn,
            handler=app.load,
            region=REGION,
            batch_size=settings.batch_size,
            positions=self.shard_positions,
        )
        producer = threading.Thread(target=fire_schedule, name="ingest", daemon=True)
        producer.start()
        workers = threading.Thread(target=run_workers, name="workers", daemon=True)
        workers.start()
        shards = mapping.run(producer_done)
        producer.join()
        workers.join()
        pipeline_logger.removeHandler(progress_handler)
        pipeline_s = time.monotonic() - started

        run_id = self._run_id(ingest_outcome)
        report = self._reconcile(run_id, ingest_outcome, shards, work.progress)
        report.timings = {
            "total_s": round(self.started_s + time.monotonic() - started, 3),
            "pipeline_s": round(pipeline_s, 3),
        }
        return report

    def _run_id(self, ingest_outcome: dict[str, Any]) -> str:
        result = ingest_outcome.get("result")
        if result:
            return str(result["run_id"])
        # A failed ingest raised; its manifest still exists: take the newest run.
        client = aws.client("dynamodb")
        items = client.scan(TableName=self.settings.table_name("runs"))["Items"]
        run_ids = sorted(item["run_id"]["S"] for item in items)
        return run_ids[-1] if run_ids else "none"

    def _reconcile(
        self,
        run_id: str,
        ingest_outcome: dict[str, Any],
        shards: dict[str, ShardProgress],
        work: WorkerProgress | None = None,
    ) -> RunReport:
        settings = self.settings
        manifest = wiring.manifests(settings).get(run_id) or {}
        quarantined = wiring.quarantine(settings).count_by_entity(run_id)
        sinks = wiring.build_sinks(settings)
        entities: dict[str, dict[str, Any]] = {}
        errors: list[str] = []
        if "error" in ingest_outcome:
            errors.append(f"ingest: {ingest_outcome['error']}")
        for shard in shards.values():
            if shard.stuck_at:
                errors.append(
                    f"{shard.shard_id}: stopped at sequence {shard.stuck_at} after retries"
                )
            if shard.error:
                errors.append(f"{shard.shard_id}: {shard.error}")
        if work is not None:
            errors.extend(f"ingest worker: {error}" for error in work.errors)
            dead = self._dead_work_items()
            if dead:
                errors.append(
                    f"{dead} ingest work items failed for good (dead-letter queue); last "
                    f"errors: {work.last_failures}"
                )
        balanced = True
        for entity in settings.resource_list:
            counts: dict[str, Any] = {
                "fetched": int(manifest.get(f"fetched.{entity}", 0)),
                "published": int(manifest.get(f"published.{entity}", 0)),
                "quarantined": int(quarantined.get(entity, 0)),
                "written": {
                    sink.name: int(manifest.get(f"written.{sink.name}.{entity}", 0))
                    for sink in sinks
                },
                "stored": {sink.name: sink.count(entity) for sink in sinks},
                "unchanged": int(manifest.get(f"unchanged.{entity}", 0)),
            }
            entities[entity] = counts
            # Every fetched record was published, skipped as unchanged, or quarantined.
            accounted = (
                counts["published"]
                + counts["unchanged"]
                + int(manifest.get(f"quarantined.ingest.{entity}", 0))
            )
            if accounted != counts["fetched"]:
                balanced = False
                errors.append(
                    f"{entity}: fetched {counts['fetched']} but published {counts['published']}"
                    f" + unchanged {counts['unchanged']} + quarantined at ingest "
                    f"{int(manifest.get(f'quarantined.ingest.{entity}', 0))} = {accounted}"
                )
            work_items = int(manifest.get(f"work_items.{entity}", 0))
            work_done = int(manifest.get(f"work_done.{entity}", 0))
            if work_items != work_done:
                balanced = False
                errors.append(f"{entity}: {work_done} of {work_items} work items done")
            for sink_name, stored in counts["stored"].items():
                if stored + int(counts["quarantined"]) != int(counts["fetched"]):
                    balanced = False
                    errors.append(
                        f"{entity}: fetched {counts['fetched']} but {sink_name} stores "
                        f"{stored} and {counts['quarantined']} are quarantined"
                    )
        status = "succeeded" if balanced and not errors else "failed"
        return RunReport(
            run_id=run_id,
            status=status,
            entities=entities,
            timings={},
            shards=shards,
            errors=errors,
        )

    def _dead_work_items(self) -> int:
        """Messages in the work queue's dead-letter queue: items no worker could finish."""
        sqs = aws.client("sqs")
        dlq_url = sqs.get_queue_url(QueueName=f"{self.settings.work_queue}-dlq")["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    # -- inspection --------------------------------------------------------------------------

    def stored_items(self, sink_name: str, entity: str) -> list[dict[str, Any]]:
        """Every row of one sink and entity in the API's shape, sorted by key."""
        sink = next(s for s in wiring.build_sinks(self.settings) if s.name == sink_name)
        rows: list[dict[str, Any]] = sink.rows(entity)  # type: ignore[attr-defined]
        return sorted(rows, key=lambda item: entity_key(entity, item))

    def dump(self, directory: Path) -> list[Path]:
        """Write `DIR/<sink>/<entity>.jsonl`, one stored row per line."""
        written: list[Path] = []
        for sink in wiring.build_sinks(self.settings):
            folder = directory / sink.name
            folder.mkdir(parents=True, exist_ok=True)
            for entity in ENTITIES:
                path = folder / f"{entity}.jsonl"
                with path.open("wb") as handle:
                    for item in self.stored_items(sink.name, entity):
                        handle.write(orjson.dumps(item) + b"\n")
                written.append(path)
        return written
