"""The defaults sweep: which batch size, batching window, shards and concurrency are fastest.

One knob at a time around the deployed defaults (`Knobs.defaults()`, i.e.
`chalicelib/settings.py`): every value of `GRID[knob]` is run through the user's command
(`bench/command.py`) with the other knobs at their default, and the run with the shortest
time wins. The time compared is `verdict_s` when every run of the sweep reports it, else
`pipeline_s` (the metric used is recorded). The default is run again beside each knob's
alternatives (the load of shared cores drifts over a sweep). One factor at a time, not the full
grid: 15 runs instead of 243, at the price of missing interactions (e.g. a larger batch with
more write concurrency), which the results file lets anyone re-run with other values.

`python -m bench` runs the sweep after everything else (`--sweep-size`, `--sweep-knobs`) and
writes it into its results file; `python -m bench.sweep --records N [--knobs ...]` runs the sweep
alone into a results file of its own.

A run that did not succeed is never the best. A value that wins by less than `NOISE` (5 %)
over the default does not move the default: on two shared cores one run's noise is larger.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from rich.console import Console

from bench.command import Knobs, run_command

GRID: Final[dict[str, tuple[int, ...]]] = {
    "batch_size": (100, 500, 1000),
    "batching_window_s": (0, 1, 5),
    "shards": (1, 2, 4),
    "write_concurrency": (2, 4, 8),
    "fetch_concurrency": (2, 4, 8),
}
NOISE: Final = 0.05


def run_sweep(
    records: int,
    root: Path,
    console: Console,
    knobs: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every value of every knob in `knobs` (default: all of `GRID`), the rest at default."""
    baseline = Knobs.defaults()
    runs: list[dict[str, Any]] = []
    for knob in knobs or list(GRID):
        # the default is run again for every knob, right beside its alternatives: the load of
        # shared cores drifts over the minutes a sweep takes
        for value in sorted({*GRID[knob], getattr(baseline, knob)}):
            chosen = dataclasses.replace(baseline, **{knob: value})
            measured = run_command(records, chosen, root / f"sweep-{knob}-{value}", seed=seed)
            console.print(
                f"  {knob}={value}: pipeline {measured['timings']['pipeline_s']} s, "
                f"verdict {measured['timings']['verdict_s']} s ({measured['status']})"
            )
            runs.append({"knob": knob, "value": value, **measured})
    return {
        "records_per_resource": records,
        "defaults": baseline.as_dict(),
        "runs": runs,
        **best_values(runs, baseline),
    }


def sweep_metric(runs: list[dict[str, Any]]) -> str:
    """`verdict_s` when every run reports it, else `pipeline_s`."""
    if runs and all(run["timings"].get("verdict_s") is not None for run in runs):
        return "verdict_s"
    return "pipeline_s"


def best_values(runs: list[dict[str, Any]], baseline: Knobs) -> dict[str, Any]:
    """Per knob, the value of its fastest succeeded run, and whether it beats the default by
    more than `NOISE`."""
    metric = sweep_metric(runs)
    best: dict[str, Any] = {}
    for knob in dict.fromkeys(run["knob"] for run in runs):
        timed = [
            run
            for run in runs
            if run["knob"] == knob
            and run["status"] == "succeeded"
            and run["timings"].get(metric) is not None
        ]
        if not timed:
            best[knob] = {"value": None, "seconds": None, "default": getattr(baseline, knob)}
            continue
        fastest = min(timed, key=lambda run: run["timings"][metric])
        default = next((run for run in timed if run["value"] == getattr(baseline, knob)), None)
        default_s = default["timings"][metric] if default is not None else None
        wins = default_s is None or fastest["timings"][metric] < default_s * (1 - NOISE)
        best[knob] = {
            "value": fastest["value"],
            "seconds": fastest["timings"][metric],
            "default": getattr(baseline, knob),
            "default_seconds": default_s,
            "beats_default": bool(wins and fastest["value"] != getattr(baseline, knob)),
        }
    return {"metric": metric, "best": best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    parser.add_argument("--records", type=int, default=10_000, help="per resource (10000)")
    parser.add_argument("--knobs", default=",".join(GRID), help="comma list (all)")
    parser.add_argument("--out", type=Path, help="default bench/results/sweep-<ts>.json")
    args = parser.parse_args(argv)
    knobs = [knob.strip() for knob in args.knobs.split(",") if knob.strip()]
    if set(knobs) - set(GRID):
        parser.error(f"--knobs: unknown {', '.join(sorted(set(knobs) - set(GRID)))}")
    console = Console(stderr=True)
    Path(".localcloud").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="sweep-", dir=".localcloud"))
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": "python -m bench.sweep " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sweep": run_sweep(args.records, root, console, knobs),
    }
    out = (
        args.out
        or Path(__file__).resolve().parent / "results" / f"sweep-{started:%Y%m%dT%H%M%SZ}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    for knob, best in result["sweep"]["best"].items():
        console.print(f"{knob}: best {best['value']} (default {best['default']})")
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
