"""One benchmark measurement: the pipeline (each function in its own process) or the floor.

Every measurement gets a fresh local cloud (moto server, fake API, provisioning), so sizes do
not pollute each other. The pipeline's functions run as separate processes, as on Lambda:
this gives each side its own peak memory and its own AWS call counts, and lets the ingest and
the load use both cores as they would on AWS. Times start when the ingest handler starts
(cold starts excluded) and end when the load side has drained the stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess  # nosec B404
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from bench import callcount
from bench.command import Knobs
from bench.floor import postgres_row_counts, run_floor
from chalicelib import wiring
from chalicelib.load.sinks.postgres_connection import database_for
from chalicelib.model.contract import ENTITIES
from chalicelib.runs import counters
from chalicelib.runs.ledger import run_id_for_event
from infra.chalice_config import PROJECT_ROOT
from localcloud.run_report import reconcile_run
from localcloud.stack import REGION, LocalCloud
from localcloud.triggers.kinesis import ShardProgress
from localcloud.triggers.lambda_runtime import scheduled_event


@dataclass
class Options:
    batch_size: int = 100
    shards: int = 2
    seed: int = 0
    profile_dir: Path | None = None
    knobs: Knobs = field(default_factory=Knobs)
    """What the user's command is run with (None: the deployed default)."""


class _Side:
    """A side process; `ready()` waits until its imports are done."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.out = workdir / f"{name}-{time.monotonic_ns()}.json"
        # our own interpreter with our own arguments, no shell (bandit B603)
        self.process = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "bench.sides", name, str(self.out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=PROJECT_ROOT,
            env=env,
        )

    def ready(self) -> None:
        stdout: IO[bytes] | None = self.process.stdout
        assert stdout is not None
        stdout.readline()

    def finish_input(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()

    def wait(self) -> dict[str, Any]:
        self.finish_input()
        self.process.wait()
        if not self.out.exists():
            return {"side": self.name, "error": f"exited {self.process.returncode}, no output"}
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def moto_cpu_s(cloud: LocalCloud) -> float:
    process = cloud.moto._process
    return process_cpu_s(process.pid) if process is not None else 0.0


def cloud_for(
    records: int,
    options: Options,
    extra_env: dict[str, str],
    state: Path,
    api_url: str | None = None,
) -> LocalCloud:
    env = {"PIPELINE_BATCH_SIZE": str(options.batch_size), **extra_env}
    return LocalCloud(
        state,
        api_url=api_url,
        records=records,
        seed=options.seed,
        shard_count=options.shards,
        extra_env=env,
    )


def run_pipeline(
    cloud: LocalCloud,
    options: Options,
    workers: int = 0,
    positions: dict[str, str] | None = None,
    load: str = "concurrent",
) -> dict[str, Any]:
    """One scheduled run with each function in its own process; returns what it measured.

    `load` is "concurrent" (the trigger consumes while the ingest publishes, as on AWS),
    "after" (the stream is drained once the ingest is done, which times the ingest side
    alone) or "none" (ingest side only: records stay in the stream).
    """
    assert cloud.provisioned is not None
    workdir = Path(tempfile.mkdtemp(prefix="sides-", dir=cloud.state_dir))
    rule = f"arn:aws:events:{REGION}:123456789012:rule/moovitamix-pipeline-ingest"
    event = scheduled_event(rule, REGION)
    run_id = run_id_for_event(event)
    env = cloud.function_environment()
    env["BENCH_EVENT"] = json.dumps(event)
    env["BENCH_SHARD_POSITIONS"] = json.dumps(positions or {})
    env["BENCH_FAILURE_QUEUE_ARN"] = cloud.provisioned.failure_queue_arn
    env["BENCH_FAILURE_QUEUE_URL"] = cloud.provisioned.failure_queue_url
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    if options.profile_dir is not None:
        options.profile_dir.mkdir(parents=True, exist_ok=True)
        env["BENCH_PROFILE_DIR"] = str(options.profile_dir.resolve())
    if "postgres" in cloud.settings.sink_list:
        # the schema is made at deploy time, not by the first timed batch
        database_for(cloud.settings).connection()
    moto_before = moto_cpu_s(cloud)
    load_side = _Side("load", workdir, env) if load == "concurrent" else None
    pool = [_Side("workers", workdir, env) for _ in range(workers)]
    for side in (*([load_side] if load_side else []), *pool):
        side.ready()
    ingest = _Side("ingest", workdir, env)
    ingest.ready()
    ingest_out = ingest.wait()
    worker_outs = [side.wait() for side in pool]
    ingest_finished = max(out.get("finished_at", 0.0) for out in (ingest_out, *worker_outs))
    if load == "after":
        load_side = _Side("load", workdir, env)
        load_side.ready()
    load_out: dict[str, Any] = load_side.wait() if load_side else {"side": "load"}
    moto_s = moto_cpu_s(cloud) - moto_before

    started = ingest_out.get("started_at", 0.0)
    finished = max(out.get("finished_at", 0.0) for out in (ingest_out, load_out, *worker_outs))
    if load == "after":  # the load side's cold start is not pipeline time
        finished -= load_out.get("started_at", ingest_finished) - ingest_finished
    outcome: dict[str, Any] = {}
    if ingest_out.get("error"):
        outcome["error"] = ingest_out["error"]
    else:
        outcome["result"] = ingest_out["result"]
    shards = {
        shard_id: ShardProgress(**progress)
        for shard_id, progress in load_out.get("shards", {}).items()
    }
    if load == "none":  # nothing is stored yet: the manifest's counts, no reconciliation
        entities, errors = _manifest_counts(cloud, run_id), []
        if "error" in outcome:
            errors.append(f"ingest: {outcome['error']}")
        status = "succeeded" if not errors else "failed"
    else:
        report = reconcile_run(cloud, run_id, outcome, shards)
        entities, errors, status = report.entities, list(report.errors), report.status
        for entity, counters in _manifest_counts(cloud, run_id).items():
            for name in ("unchanged", "work_items", "work_done"):
                entities.setdefault(entity, {})[name] = counters[name]
    for out in (load_out, *worker_outs):
        if out.get("error"):
            errors.append(f"{out['side']}: {out['error']}")
        errors.extend(f"{out['side']}: {error}" for error in out.get("errors", []))
    status = "succeeded" if status == "succeeded" and not errors else "failed"
    records = sum(int(counts["fetched"]) for counts in entities.values())
    elapsed = max(finished - started, 1e-9)
    ingest_mem = [ingest_out, *worker_outs]
    return {
        "status": status,
        "errors": errors,
        "run_id": run_id,
        "records": records,
        "seconds": round(elapsed, 3),
        "records_per_s": round(records / elapsed, 1),
        "ingest_seconds": round(max(ingest_finished - started, 1e-9), 3),
        "load": load,
        "ingest_result": outcome.get("result"),
        "entities": entities,
        "memory_mb": {
            "ingest_peak": max(out.get("peak_rss_mb", 0.0) for out in ingest_mem),
            "ingest_baseline": max(out.get("baseline_rss_mb", 0.0) for out in ingest_mem),
            "load_peak": load_out.get("peak_rss_mb", 0.0),
            "load_baseline": load_out.get("baseline_rss_mb", 0.0),
        },
        "cpu_s": {
            "ingest": round(sum(out.get("cpu_s", 0.0) for out in ingest_mem), 3),
            "load": load_out.get("cpu_s", 0.0),
            "moto": round(moto_s, 3),
        },
        "aws": {
            "ingest": callcount.merge([out.get("aws", {}) for out in ingest_mem]),
            "load": load_out.get("aws", {}),
        },
        "positions": load_out.get("positions", {}),
        "data_tables": [
            cloud.settings.table_name(entity) for entity in cloud.settings.resource_list
        ],
        "workers": workers,
    }


MANIFEST_COUNTERS = ("fetched", "published", "unchanged", "work_items", "work_done")


def _manifest_counts(cloud: LocalCloud, run_id: str) -> dict[str, dict[str, Any]]:
    """Per entity, the ingest's counters in the run's manifest (change detection and fan-out
    included, 0 when absent)."""
    manifest = wiring.manifests(cloud.settings).get(run_id) or {}
    return {
        entity: {name: int(manifest.get(f"{name}.{entity}", 0)) for name in MANIFEST_COUNTERS}
        | {
            "quarantined": int(manifest.get(counters.quarantined("ingest", entity), 0)),
            "written": {},
        }
        for entity in cloud.settings.resource_list
    }


def run_floor_measurement(records: int, options: Options, state: Path) -> dict[str, Any]:
    """The floor on a fresh local cloud of the same size."""
    counter = callcount.install()
    with cloud_for(records, options, {}, state) as cloud:
        before, moto_before = counter.as_dict(), moto_cpu_s(cloud)
        result = run_floor(cloud.settings, options.batch_size)
        after, moto_s = counter.as_dict(), moto_cpu_s(cloud) - moto_before
        postgres_rows = (
            postgres_row_counts(cloud.settings) if "postgres" in cloud.settings.sink_list else {}
        )
    calls = {
        name: count - before["calls"].get(name, 0)
        for name, count in after["calls"].items()
        if count - before["calls"].get(name, 0)
    }
    return {
        "records": result.records,
        "seconds": round(result.total_s, 3),
        "ingest_s": round(result.ingest_s, 3),
        "load_s": round(result.load_s, 3),
        "records_per_s": round(result.records_per_s, 1),
        "cpu_s": {"moto": round(moto_s, 3)},
        "aws": {"calls": calls},
        "postgres_rows": postgres_rows,
    }


def stored_digest(cloud: LocalCloud) -> str:
    """A digest of every stored row of every sink in the API's shape: equal data, equal digest."""
    digest = hashlib.sha256()
    for sink in cloud.settings.sink_list:
        for entity in ENTITIES:
            for item in cloud.stored_items(sink, entity):
                digest.update(orjson.dumps(item, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()
