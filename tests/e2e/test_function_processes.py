"""The functions as `localcloud run` runs them: warm worker processes, one per concurrent
execution, with the triggers in the cloud's process (`localcloud.triggers.lambda_service`).

What must hold there as in the in-process mode the other tests use: the run succeeds and its
verdict comes from the reconcile function the pipeline asked (not the schedule), the EMF
metrics the function processes write reach CloudWatch, their AWS calls are counted per
function, chaos faults act inside the function processes, and the processes stay warm from
one run to the next.
"""

from __future__ import annotations

from pathlib import Path

from localcloud.chaos import Chaos
from localcloud.stack import LocalCloud

RECORDS = 60
FAST = {
    "PIPELINE_PAGE_SIZE": "10",
    "PIPELINE_BATCH_SIZE": "20",
    "PIPELINE_BACKOFF_FACTOR_S": "0.05",
    "PIPELINE_MAX_BACKOFF_S": "0.5",
}


def test_a_run_in_worker_processes_is_settled_on_the_pipeline_s_own_request(
    tmp_path: Path,
) -> None:
    with LocalCloud(
        tmp_path / "state", records=RECORDS, seed=3, extra_env=FAST, function_processes=True
    ) as cloud:
        first = cloud.run()
        pools = cloud.lambda_service().pools
        processes = {name: pool.processes for name, pool in pools.items()}
        pids = {
            name: sorted(host.process.pid for host in pool._all) for name, pool in pools.items()
        }
        second = cloud.run()
        warm_pids = {
            name: sorted(host.process.pid for host in pool._all) for name, pool in pools.items()
        }
        log = cloud.log_path.read_text()
    assert first.status == "succeeded", first.errors
    assert first.verdict_trigger == "request"
    assert first.timings["verdict_s"] > 0
    assert first.timings["reconcile_s"] > 0
    assert first.event is not None  # DatasetUpdated, published by the reconcile function
    assert first.aws_calls is not None
    assert {"ingest", "load", "reconcile"} <= {f for f, n in first.aws_calls.items() if n > 0}
    assert first.metrics.get("RecordsWritten", 0) >= RECORDS * 5  # EMF lines of the processes
    assert processes["load"] >= 1
    assert processes["ingest"] == 1
    assert processes["reconcile"] >= 1
    assert '"message":"batch loaded"' in log  # the processes log into lambda.log
    # the next run: nothing changed, the same warm processes serve it
    assert second.status == "succeeded", second.errors
    assert all(counts["published"] == 0 for counts in second.entities.values())
    assert warm_pids == pids


def test_chaos_faults_act_inside_the_function_processes(tmp_path: Path) -> None:
    chaos = Chaos.from_spec(
        "consumer-crash=0.3,duplicate-delivery=0.3,producer-timeout", seed=11, fake_api=True
    )
    with LocalCloud(
        tmp_path / "state",
        records=RECORDS * 2,
        seed=11,
        extra_env=FAST,
        chaos=chaos,
        function_processes=True,
    ) as cloud:
        report = cloud.run()
    assert report.status == "succeeded", report.errors
    assert report.chaos is not None
    assert report.chaos["consumer-crash"] > 0
    assert report.chaos["duplicate-delivery"] > 0
    assert report.chaos["producer-timeout"] > 0
    assert report.ingest_invocations > 1  # cut off, then re-invoked with the same event
    for counts in report.entities.values():
        assert counts["stored"] == {sink: RECORDS * 2 for sink in counts["stored"]}
