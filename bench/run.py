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
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from bench import callcount
from bench.floor import run_floor
from chalicelib.contract import ENTITIES
from localcloud.driver import ShardProgress
from localcloud.stack import PROJECT_ROOT, LocalCloud


@dataclass
class Options:
    batch_size: int = 500
    shards: int = 2
    seed: int = 0
    profile_dir: Path | None = None


class _Side:
    """A side process; `ready()` waits until its imports are done."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.out = workdir / f"{name}-{time.monotonic_ns()}.json"
        self.process = subprocess.Popen(
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
    workdir = Path(tempfile.mkdtemp(prefix="sides-", dir=cloud.state_dir))
    env = dict(os.environ)
    env["BENCH_SHARD_POSITIONS"] = json.dumps(positions or {})
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    if options.profile_dir is not None:
        options.profile_dir.mkdir(parents=True, exist_ok=True)
        env["BENCH_PROFILE_DIR"] = str(options.profile_dir.resolve())
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
        shard_id: ShardProgress(
            shard_id,
            invocations=p["invocations"],
            records_delivered=p["records"],
            redeliveries=p["redeliveries"],
            stuck_at=p["stuck_at"],
            error=p["error"],
        )
        for shard_id, p in load_out.get("shards", {}).items()
    }
    report = cloud._reconcile(cloud._run_id(outcome), outcome, shards)
    errors = list(report.errors) if load != "none" else []
    for out in (load_out, *worker_outs):
        if out.get("error"):
            errors.append(f"{out['side']}: {out['error']}")
        errors.extend(f"{out['side']}: {error}" for error in out.get("errors", []))
    status = "succeeded" if report.status == "succeeded" and not errors else "failed"
    records = sum(int(counts["fetched"]) for counts in report.entities.values())
    elapsed = max(finished - started, 1e-9)
    ingest_mem = [ingest_out, *worker_outs]
    return {
        "status": status,
        "errors": errors,
        "run_id": report.run_id,
        "records": records,
        "seconds": round(elapsed, 3),
        "records_per_s": round(records / elapsed, 1),
        "ingest_seconds": round(max(ingest_finished - started, 1e-9), 3),
        "load": load,
        "ingest_result": outcome.get("result"),
        "entities": report.entities,
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
        "workers": workers,
    }


def run_floor_measurement(records: int, options: Options, state: Path) -> dict[str, Any]:
    """The floor on a fresh local cloud of the same size."""
    counter = callcount.install()
    with cloud_for(records, options, {}, state) as cloud:
        before, moto_before = counter.as_dict(), moto_cpu_s(cloud)
        result = run_floor(cloud.settings, options.batch_size)
        after, moto_s = counter.as_dict(), moto_cpu_s(cloud) - moto_before
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
    }


def stored_digest(cloud: LocalCloud) -> str:
    """A digest of every stored row of every sink in the API's shape: equal data, equal digest."""
    digest = hashlib.sha256()
    for sink in cloud.settings.sink_list:
        for entity in ENTITIES:
            for item in cloud.stored_items(sink, entity):
                digest.update(orjson.dumps(item, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()
