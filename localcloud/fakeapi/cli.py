"""`python -m localcloud.fakeapi`: the fake API in the foreground, on a port of your choice."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn

from localcloud.fakeapi.app import build_app
from localcloud.fakeapi.content_faults import CONTENT_FAULTS
from localcloud.fakeapi.faults import FAULT_NAMES, FaultInjector
from localcloud.fakeapi.source_faults import SourceFaults, describe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.fakeapi",
        description=(
            "Serve a MooVitamix-compatible fake API in the foreground: GET /users, /tracks and "
            "/listen_history (page >= 1, size 1..100), data generated lazily and "
            "deterministically from --seed, with the contract's quirks."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=1000, help="items per resource")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same data")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=P",
        help=f"inject a fault with probability P; NAME is one of {', '.join(FAULT_NAMES)}; "
        "repeatable. Content faults (per item, the same on every fetch): "
        + "; ".join(f"{name}: {text}" for name, text in CONTENT_FAULTS.items()),
    )
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument(
        "--source-fault",
        action="append",
        default=[],
        metavar="NAME[@RESOURCE]",
        help="make RESOURCE (default users) misbehave the same way on every request; "
        "repeatable; NAME is one of: " + "; ".join(describe()),
    )
    parser.add_argument(
        "--drip-interval", type=float, default=3.0, help="seconds between bytes of slow-drip"
    )
    parser.add_argument(
        "--delete-front", type=int, default=20, help="rows delete-front removes after page 1"
    )
    parser.add_argument(
        "--huge-page-mb", type=int, default=100, help="megabytes of padding of huge-page"
    )
    parser.add_argument(
        "--retry-after", type=int, default=1, help="Retry-After seconds of api-429 answers"
    )
    parser.add_argument(
        "--timeout-delay", type=float, default=2.0, help="seconds an api-timeout stalls"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn log level",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m localcloud.fakeapi`."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.records < 0:
        parser.error("--records must not be negative")
    faults = None
    if args.fault:
        try:
            faults = FaultInjector.parse(
                args.fault,
                seed=args.fault_seed,
                retry_after=args.retry_after,
                timeout_delay=args.timeout_delay,
            )
        except ValueError as error:
            parser.error(str(error))
    source_faults = None
    if args.source_fault:
        try:
            source_faults = SourceFaults.parse(
                args.source_fault,
                drip_interval=args.drip_interval,
                delete_front=args.delete_front,
                huge_page_bytes=args.huge_page_mb * 1024 * 1024,
            )
        except ValueError as error:
            parser.error(str(error))
    app = build_app(
        records=args.records, seed=args.seed, faults=faults, source_faults=source_faults
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
