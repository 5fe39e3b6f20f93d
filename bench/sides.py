"""One side of the pipeline in its own process, as Lambda runs each function in its own.

`python -m bench.sides ingest|load|workers OUT.json` runs the ingest function (the schedule
fired once), the load function (the Kinesis trigger until the stream is drained) or the
fan-out workers (the SQS trigger) with the environment of the parent's local cloud, and writes
what it measured to OUT.json: the handler's result, its wall and CPU time, the peak resident
memory of the process (what Lambda's memory limit applies to) and its AWS calls.

The load and workers sides stop once their producer is done, which the parent tells them by
closing their standard input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import callcount


def _rss_mb() -> float:
    """Current resident memory of this process (Linux /proc), in MiB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """Peak resident memory of this process image (VmHWM).

    Not `getrusage().ru_maxrss`: Linux keeps that across `execve`, so a child would report
    its parent's size when the parent was bigger at the fork.
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return 0.0


def _stdin_closed() -> threading.Event:
    done = threading.Event()

    def wait() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait, name="stdin", daemon=True).start()
    return done


def run_ingest() -> dict[str, Any]:
    """The schedule fires once (`BENCH_EVENT`, made by the parent, which derives the run id
    from it); Lambda's async invocation runs the ingest (and its
    continuations, if it ever stops before its timeout) with the same event."""
    import app
    from chalicelib.aws import clients as aws
    from chalicelib.runs.ledger import run_id_for_event
    from localcloud.triggers.async_invoker import AsyncInvoker

    region = os.environ["AWS_REGION"]
    event = json.loads(os.environ["BENCH_EVENT"])
    invoker = AsyncInvoker(
        handler=app.ingest,
        lambda_client=aws.client("lambda"),
        function_name="ingest",
        region=region,
    )
    last = invoker.run(event)
    if last.error is not None:
        raise RuntimeError(f"ingest invocation {last.number} failed: {last.error}")
    return {
        "run_id": run_id_for_event(event),
        "result": last.result,
        "invocations": len(invoker.invocations),
    }


def run_load() -> dict[str, Any]:
    """The Kinesis trigger, continuing after `BENCH_SHARD_POSITIONS` (the previous drain)."""
    import app
    from chalicelib.aws import clients as aws
    from chalicelib.settings import get_settings
    from infra.trigger import KinesisEventSourceSettings
    from localcloud.triggers.kinesis import KinesisEventSourceMapping, ShardProgress

    settings = get_settings()
    kinesis = aws.client("kinesis")
    summary = kinesis.describe_stream_summary(StreamName=settings.stream_name)
    positions: dict[str, str] = json.loads(os.environ.get("BENCH_SHARD_POSITIONS", "{}"))
    mapping = KinesisEventSourceMapping(
        kinesis=kinesis,
        stream_name=settings.stream_name,
        stream_arn=summary["StreamDescriptionSummary"]["StreamARN"],
        handler=app.load,
        region=os.environ["AWS_REGION"],
        settings=KinesisEventSourceSettings.from_settings(
            settings, on_failure_destination_arn=os.environ.get("BENCH_FAILURE_QUEUE_ARN")
        ),
        sqs=aws.client("sqs"),
        destination_url=os.environ.get("BENCH_FAILURE_QUEUE_URL"),
        progress={
            shard_id: ShardProgress(shard_id, last_sequence=sequence)
            for shard_id, sequence in positions.items()
        },
    )
    shards = mapping.run(_stdin_closed())
    return {
        "shards": {shard_id: dataclasses.asdict(p) for shard_id, p in shards.items()},
        "positions": {
            shard_id: p.last_sequence for shard_id, p in shards.items() if p.last_sequence
        },
    }


def run_workers() -> dict[str, Any]:
    import app
    from chalicelib.aws import clients as aws
    from chalicelib.settings import get_settings
    from localcloud.triggers.sqs import SqsEventSourceMapping

    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName=get_settings().work_queue)["QueueUrl"]
    mapping = SqsEventSourceMapping(
        sqs=sqs,
        queue_url=url,
        handler=app.ingest_worker,
        concurrency=1,
        region=os.environ["AWS_REGION"],
    )
    progress = mapping.run(_stdin_closed())
    return {
        "invocations": progress.invocations,
        "failures": progress.failures,
        "errors": progress.errors + progress.last_failures,
    }


SIDES = {"ingest": run_ingest, "load": run_load, "workers": run_workers}


def main(argv: list[str]) -> int:
    side, out = argv[0], Path(argv[1])
    # The parent reads one line ("ready") from our stdout; everything else the process prints
    # (the handlers' EMF metric lines, as Lambda's stdout) goes to a file, or a full pipe
    # would block the process.
    ready = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    with open(out.with_suffix(".stdout"), "wb") as stdout_file:
        os.dup2(stdout_file.fileno(), sys.stdout.fileno())
    counter = callcount.install()
    profile = os.environ.get("BENCH_PROFILE_DIR")
    import app  # noqa: F401 - import cost belongs to the cold start, not to the measurement
    from chalicelib.aws import clients as aws
    from chalicelib.observability.logging import SERVICE

    if side == "ingest":
        aws.client("lambda")  # the invoker's own client (Lambda's machinery, not the function's)

    # Lambda logs go to a file beside the output, never to the pipe the parent reads.
    pipeline_logger = logging.getLogger(SERVICE)
    formatter = pipeline_logger.handlers[0].formatter if pipeline_logger.handlers else None
    file_handler = logging.FileHandler(out.with_suffix(".log"), encoding="utf-8")
    file_handler.setFormatter(formatter or logging.Formatter())
    pipeline_logger.handlers = [file_handler]
    pipeline_logger.propagate = False

    baseline_mb = _rss_mb()
    ready.write("ready\n")
    ready.close()
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    started_at = time.time()
    wall, cpu = time.perf_counter(), time.process_time()
    error = None
    try:
        outcome = SIDES[side]()
    except Exception as exc:  # reported to the parent, which fails the run
        outcome, error = {}, f"{type(exc).__name__}: {exc}"
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        profiler.stop()
        Path(str(profile), f"{side}-{os.getpid()}.html").write_text(profiler.output_html())
    outcome.update(
        {
            "side": side,
            "error": error,
            "started_at": started_at,
            "finished_at": time.time(),
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "baseline_rss_mb": round(baseline_mb, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "aws": counter.as_dict(),
        }
    )
    out.write_text(json.dumps(outcome))
    return 0 if error is None else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
