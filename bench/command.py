"""The user's command, measured: `python -m localcloud run --records N --json` as a subprocess.

What a user runs is what the benchmark times here: the command starts its own local cloud
(moto in its default threaded mode, the built-in API, the embedded PostgreSQL), deploys the
local stage, fires the schedule, drives the mappings, waits for the reconcile function's
verdict and prints its JSON summary. The benchmark only reads that summary and the wall time
of the whole command; it changes nothing inside it. The knobs the defaults sweep varies go in
as a user would set them: `PIPELINE_*` variables of the shell (deployed as the functions'
environment) and `--shards`.

The summary keys read (`SUMMARY_TIMINGS`, `SUMMARY_FUNCTIONS`) are the command's contract with
the benchmark; a key the command does not print yet is listed in `missing`, and every target
that needs it is reported "not measured" (a miss, never a pass).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess  # nosec B404
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from chalicelib.settings import Settings
from infra.chalice_config import PROJECT_ROOT, stage_environment

SUMMARY_TIMINGS: Final = ("pipeline_s", "total_s", "verdict_s", "reconcile_s")
"""`timings.*` of the summary: `verdict_s` is schedule fired -> the reconcile function's verdict
written; `reconcile_s` the reconcile function's own time for the run."""
SUMMARY_FUNCTIONS: Final = ("ingest", "load", "reconcile")
"""`aws_calls.*` of the summary: AWS API calls made inside each function."""


KNOB_VARIABLES: Final = {
    "batch_size": "PIPELINE_BATCH_SIZE",
    "batching_window_s": "PIPELINE_BATCHING_WINDOW_S",
    "write_concurrency": "PIPELINE_WRITE_CONCURRENCY",
    "fetch_concurrency": "PIPELINE_FETCH_CONCURRENCY",
}
"""The shell variable of each knob but `shards` (the command's `--shards`)."""


@dataclass(frozen=True)
class Knobs:
    """The settings the defaults sweep varies; None keeps the deployed default."""

    batch_size: int | None = None
    batching_window_s: int | None = None
    shards: int | None = None
    write_concurrency: int | None = None
    fetch_concurrency: int | None = None

    @classmethod
    def defaults(cls) -> Knobs:
        """What the user's command deploys when nothing is set: the local stage's variables
        in `.chalice/config.json`, else `chalicelib/settings.py`'s defaults."""
        stage = stage_environment("local")
        fields = Settings.model_fields

        def deployed(name: str, variable: str) -> int:
            return int(stage.get(variable, fields[name].default))

        return cls(
            **{name: deployed(name, variable) for name, variable in KNOB_VARIABLES.items()},
            shards=deployed("stream_shards", "PIPELINE_STREAM_SHARDS"),
        )

    def environment(self) -> dict[str, str]:
        return {
            variable: str(getattr(self, name))
            for name, variable in KNOB_VARIABLES.items()
            if getattr(self, name) is not None
        }

    def as_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


def command_argv(records: int, knobs: Knobs, state_dir: Path, seed: int = 0) -> list[str]:
    argv = [sys.executable, "-m", "localcloud", "run", "--records", str(records)]
    argv += ["--seed", str(seed), "--json", "--no-report", "--state-dir", str(state_dir)]
    if knobs.shards is not None:
        argv += ["--shards", str(knobs.shards)]
    return argv


def shown_command(argv: list[str], knobs: Knobs) -> str:
    """The command as a user would type it (environment first, `python` for the venv's)."""
    words = [f"{name}={value}" for name, value in sorted(knobs.environment().items())]
    words += ["python", *argv[1:]]
    return shlex.join(words)


def command_environment(knobs: Knobs) -> dict[str, str]:
    """The bench's environment without its own `PIPELINE_*` and moto mode (the command runs
    with the user's defaults), plus the knobs."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PIPELINE_") and name != "LOCALCLOUD_MOTO_THREADED"
    }
    return {**env, **knobs.environment()}


def command_timeout_s(records: int) -> float:
    """Generous: 15 minutes of start-up and reconciliation, plus 30 ms per record per resource
    (the command runs at more than 100 records/s whenever it works)."""
    return 900.0 + 0.03 * records


def run_command(
    records: int,
    knobs: Knobs,
    state_dir: Path,
    seed: int = 0,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run the user's command once; what it reported, read with `summarize`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = command_argv(records, knobs, state_dir, seed)
    started = time.perf_counter()
    # our own interpreter with our own arguments, no shell (bandit B603)
    process = subprocess.Popen(  # nosec B603
        argv,
        cwd=PROJECT_ROOT,
        env=command_environment(knobs),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    code: int | None
    try:
        stdout, stderr = process.communicate(timeout=timeout_s or command_timeout_s(records))
        code = process.returncode
    except subprocess.TimeoutExpired:
        # SIGTERM: the command stops every process it started (moto, PostgreSQL, workers)
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        stdout, code = b"", None
    wall_s = time.perf_counter() - started
    (state_dir / "command.stderr.log").write_bytes(stderr or b"")
    (state_dir / "command.stdout.json").write_bytes(stdout or b"")
    summary: dict[str, Any] | None
    try:
        loaded = orjson.loads(stdout) if stdout else None
        summary = loaded if isinstance(loaded, dict) else None
    except orjson.JSONDecodeError:
        summary = None
    result = summarize(summary, code, wall_s)
    result["command"] = shown_command(argv, knobs)
    result["knobs"] = knobs.as_dict()
    result["state_dir"] = str(state_dir)
    if summary is None:
        what = f"exit {code}" if code is not None else "stopped after its time limit"
        result["errors"].append(
            f"no JSON summary on stdout ({what}; stderr in {state_dir}/command.stderr.log)"
        )
    return result


def calls_total(value: Any) -> int | None:
    """A function's AWS calls as one number: an int, or a mapping of counts per operation
    (nested mappings added up; a `calls` entry, as bench/callcount.py writes, wins)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "calls" in value:
            return calls_total(value["calls"])
        parts = [calls_total(part) for part in value.values()]
        return sum(part for part in parts if part is not None)
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def summarize(
    summary: dict[str, Any] | None, exit_code: int | None, wall_s: float
) -> dict[str, Any]:
    """The measurement of one command run, from its JSON summary (None: it printed none)."""
    summary = summary or {}
    timings = summary.get("timings") or {}
    entities = summary.get("entities") or {}
    aws_calls = summary.get("aws_calls") or {}
    records = sum(int(counts.get("fetched", 0)) for counts in entities.values())
    measured = {name: _number(timings.get(name)) for name in SUMMARY_TIMINGS}
    calls = {name: calls_total(aws_calls.get(name)) for name in SUMMARY_FUNCTIONS}
    missing = [f"timings.{name}" for name, value in measured.items() if value is None]
    missing += [f"aws_calls.{name}" for name, value in calls.items() if value is None]
    verdict_s, reconcile_s = measured["verdict_s"], measured["reconcile_s"]
    reconcile_calls = calls["reconcile"]
    status = str(summary.get("status", "failed"))
    return {
        "exit_code": exit_code,
        "status": status if exit_code == 0 or status != "succeeded" else "failed",
        "errors": [str(error) for error in summary.get("errors", [])],
        "run_id": summary.get("run_id"),
        "records": records,
        "wall_s": round(wall_s, 3),
        "timings": measured,
        "aws_calls": calls,
        "missing": missing,
        "verdict_records_per_s": round(records / verdict_s, 1) if verdict_s else None,
        "pipeline_records_per_s": round(records / measured["pipeline_s"], 1)
        if measured["pipeline_s"]
        else None,
        "reconcile_share": round(reconcile_s / verdict_s, 4)
        if reconcile_s is not None and verdict_s
        else None,
        "reconcile_calls_per_1000": round(reconcile_calls * 1000 / records, 2)
        if reconcile_calls is not None and records
        else None,
    }
