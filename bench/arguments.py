"""The command line of `python -m bench`: its options and their defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.sweep import GRID


def build_parser(description: str | None) -> argparse.ArgumentParser:
    """`python -m bench`'s options; `description` is the help's text (bench/cli.py's docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes", default="20000,100000,1000000", help="records per resource, comma list"
    )
    parser.add_argument(
        "--full-max",
        type=int,
        default=100_000,
        help="largest size run end to end with its floor; larger ones run the ingest side only",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of the user's command and of the floor at each full size, alternating; "
        "the best of each counts (2)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="Kinesis trigger batch size (default: the deployed default, chalicelib/settings.py)",
    )
    parser.add_argument("--shards", type=int, help="Kinesis shards (default: the deployed default)")
    parser.add_argument(
        "--fanout-size", type=int, default=20_000, help="records per resource of the fan-out runs"
    )
    parser.add_argument(
        "--fanout-pages", type=int, default=20, help="pages per work item in the fan-out runs"
    )
    parser.add_argument("--workers", default="1,2,4", help="fan-out worker processes to compare")
    parser.add_argument(
        "--fanout-latency-ms",
        type=float,
        default=200,
        help="latency of every API page in the fan-out runs, as a remote API has (200)",
    )
    parser.add_argument("--write-rows", type=int, default=2000, help="rows per write strategy")
    parser.add_argument(
        "--sweep-size",
        type=int,
        default=10_000,
        help="records per resource of the defaults sweep's runs (10000; 0 skips the sweep)",
    )
    parser.add_argument(
        "--sweep-knobs",
        default=",".join(GRID),
        help=f"knobs the sweep varies, comma list of {', '.join(GRID)} (all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke test (1000,3000; fan-out 2000 with 1 and 2 workers; "
        "sweep at 1000)",
    )
    parser.add_argument("--profile", type=Path, help="write pyinstrument HTML profiles here")
    parser.add_argument("--out", type=Path, help="result file (default bench/results/<ts>.json)")
    parser.add_argument(
        "--report-only", action="store_true", help="exit 0 even when a target is missed"
    )
    return parser
