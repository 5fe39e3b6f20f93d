"""`localcloud up`, `run --attach`, `down`, and signals, as a user runs them (subprocesses).

`up --json` prints its endpoints once ready; two attached runs over an unchanged source
publish nothing the second time (the first with `--dump`, the second with `--chaos`); the
data is there for `psql` and the AWS CLI exactly as the README shows; `down`, Ctrl-C (SIGINT)
and SIGTERM leave no process behind, for `up` and `run` (also in the middle of a run: its
function worker processes end too); the next `down` or `up` stops what an `up` killed with
SIGKILL left running.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import requests

from infra.stages import PROJECT_ROOT
from localcloud.fakeapi import FakeApiServer
from localcloud.fakeapi.source_faults import SourceFaults
from localcloud.session import alive

pytestmark = pytest.mark.e2e

RECORDS = 30
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 120.0


def environment() -> dict[str, str]:
    """A user's shell: no AWS or pipeline variables; the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIPELINE_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def localcloud(
    *arguments: str, cwd: Path, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localcloud", *arguments],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(
    arguments: list[str], cwd: Path, *, sigint_ignored: bool = False
) -> subprocess.Popen[str]:
    """The command as a user starts it; `sigint_ignored`: as a script's background job
    starts it, SIGINT ignored from the start."""
    return subprocess.Popen(
        [sys.executable, "-m", "localcloud", *arguments],
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=(cwd / "stderr.log").open("w"),
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if sigint_ignored
        else None,
    )


def first_line(process: subprocess.Popen[str]) -> str:
    """The first stdout line, within READY_TIMEOUT_S (fails if the process ends first)."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            assert line, f"exited with {process.poll()} before printing anything"
            return line
        assert process.poll() is None, f"exited with {process.returncode}"
    raise AssertionError("not ready in time")


def wait_for_file(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not path.exists():
        assert process.poll() is None, f"exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def stopped(process: subprocess.Popen[str]) -> int:
    return process.wait(timeout=STOP_TIMEOUT_S)


def assert_gone(processes: dict[str, Any]) -> None:
    """Every process the command started has exited, and PostgreSQL's data is deleted."""
    deadline = time.monotonic() + 30
    pids = [int(processes[name]) for name in ("moto", "postgres") if name in processes]
    assert pids, processes
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if alive(pid)], processes
    if "postgres_data_dir" in processes:
        assert not Path(processes["postgres_data_dir"]).exists()


def _number(value: Any) -> float:
    """An EMF value: a number, or a list of one."""
    return float(value[0] if isinstance(value, list) else value)


@pytest.fixture
def guard() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started: never left running, whatever the test's outcome."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()


def test_up_two_attached_runs_psql_aws_cli_then_down(
    tmp_path: Path, guard: list[subprocess.Popen[str]]
) -> None:
    up = start(["up", "--json", "--records", str(RECORDS)], tmp_path)
    guard.append(up)
    endpoints = json.loads(first_line(up))
    state = json.loads((tmp_path / ".localcloud" / "up.json").read_text())
    assert state["pid"] == up.pid
    assert endpoints["aws_endpoint"] == state["aws_endpoint"]

    first = localcloud("run", "--attach", "--json", "--dump", "dump", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    first_summary = json.loads(first.stdout)
    assert first_summary["status"] == "succeeded"
    assert {c["published"] for c in first_summary["entities"].values()} == {RECORDS}
    dumped = sorted((tmp_path / "dump").glob("*/*.jsonl"))
    assert len(dumped) == 6  # two sinks, three entities
    assert {len(path.read_text().splitlines()) for path in dumped} == {RECORDS}
    # the AWS-side faults work attached too (in the function processes the run starts)
    second = localcloud(
        "run", "--attach", "--json", "--chaos", "dynamodb-throttle=0.0001", cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["status"] == "succeeded", summary.get("errors")
    assert summary["chaos"]["dynamodb-throttle"] >= 1
    assert summary["run_id"] != first_summary["run_id"]
    for counts in summary["entities"].values():
        assert counts["fetched"] == counts["unchanged"] == RECORDS
        assert counts["published"] == 0
        assert set(counts["written"].values()) == {0}
    assert summary["metrics"]["RunSucceeded"] == 1
    assert summary["metrics"]["Freshness"] == 0

    # the data, as the README shows it: psql with the DSN, the AWS CLI with the endpoint
    if shutil.which("psql"):
        counted = subprocess.run(
            ["psql", endpoints["postgres_dsn"], "-tAc", "select count(*) from users"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    else:
        with psycopg.connect(endpoints["postgres_dsn"]) as connection:
            row = connection.execute("select count(*) from users").fetchone()
            counted = str(row[0] if row else None)
    assert counted == str(RECORDS)
    credentials = {
        "AWS_ACCESS_KEY_ID": endpoints["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": endpoints["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": endpoints["aws_region"],
    }
    table = f"{endpoints['table_prefix']}-users"
    if shutil.which("aws"):
        scan = subprocess.run(
            [
                *("aws", "--endpoint-url", endpoints["aws_endpoint"], "dynamodb", "scan"),
                *("--table-name", table, "--select", "COUNT"),
            ],
            env={**environment(), **credentials},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert json.loads(scan.stdout)["Count"] == RECORDS
    else:
        client = boto3.client(
            "dynamodb",
            endpoint_url=endpoints["aws_endpoint"],
            region_name=credentials["AWS_DEFAULT_REGION"],
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        )
        assert client.scan(TableName=table, Select="COUNT")["Count"] == RECORDS
    # both runs' outcome metrics were written by the reconcile function, in its own process:
    # its log group in the emulator's CloudWatch Logs holds them, and no other group does
    logs = boto3.client(
        "logs",
        endpoint_url=endpoints["aws_endpoint"],
        region_name=credentials["AWS_DEFAULT_REGION"],
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )
    outcomes: dict[str, list[Any]] = {}
    for groups in logs.get_paginator("describe_log_groups").paginate(
        logGroupNamePrefix="/aws/lambda/"
    ):
        for group in groups["logGroups"]:
            name = group["logGroupName"]
            for events in logs.get_paginator("filter_log_events").paginate(logGroupName=name):
                for event in events["events"]:
                    document = json.loads(event["message"])
                    emitted = {
                        metric["Name"]
                        for directive in document["_aws"]["CloudWatchMetrics"]
                        for metric in directive["Metrics"]
                    }
                    if "RunSucceeded" in emitted:
                        outcomes.setdefault(name, []).append(
                            (document["RunSucceeded"], document["RunFailed"])
                        )
    assert list(outcomes) == [f"/aws/lambda/moovitamix-pipeline-{endpoints['stage']}-reconcile"]
    assert [tuple(map(_number, pair)) for pair in next(iter(outcomes.values()))] == [(1, 0)] * 2
    page = requests.get(endpoints["report_url"], timeout=30)
    assert page.status_code == 200
    assert 'pipeline: <span class="badge' in page.text  # the health report, its verdict

    down = localcloud("down", cwd=tmp_path, timeout=STOP_TIMEOUT_S)
    assert down.returncode == 0, down.stderr
    assert stopped(up) == 0
    assert_gone(state["processes"])
    assert not (tmp_path / ".localcloud" / "up.json").exists()
    again = localcloud("run", "--attach", "--json", cwd=tmp_path)
    assert again.returncode == 1
    assert "no local cloud is up" in again.stderr


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        ("run", signal.SIGINT),
        ("run", signal.SIGTERM),
        ("up", signal.SIGTERM),
        ("up", signal.SIGINT),
    ],
)
def test_a_signal_stops_every_process_the_command_started(
    tmp_path: Path, guard: list[subprocess.Popen[str]], command: str, signum: signal.Signals
) -> None:
    state_dir = tmp_path / "state"
    # relative to the working directory, as a user types it
    arguments = [command, "--json", "--records", "2000", "--state-dir", "state"]
    process = start(arguments, tmp_path)
    guard.append(process)
    if command == "up":
        first_line(process)
    else:
        wait_for_file(state_dir / "processes.json", process)  # the services are up
    processes = json.loads((state_dir / "processes.json").read_text())
    process.send_signal(signum)
    # stopping is how `up` ends (exit 0); a run that is cut short did not succeed (128 + signal)
    assert stopped(process) == (0 if command == "up" else 128 + signum)
    assert_gone(processes)


def test_sigint_stops_a_command_that_inherited_it_ignored(
    tmp_path: Path, guard: list[subprocess.Popen[str]]
) -> None:
    """A process started with SIGINT ignored keeps it ignored in Python unless it says
    otherwise: the command installs Ctrl-C's handler itself, so SIGINT still stops it."""
    process = start(["up", "--json", "--state-dir", "state"], tmp_path, sigint_ignored=True)
    guard.append(process)
    first_line(process)
    processes = json.loads((tmp_path / "state" / "processes.json").read_text())
    process.send_signal(signal.SIGINT)
    assert stopped(process) == 0
    assert_gone(processes)


def descendants(pid: int) -> dict[int, str]:
    """Every living process under `pid` (read from /proc), with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            try:
                command = (Path("/proc") / str(child) / "cmdline").read_bytes()
            except OSError:
                continue
            found[child] = command.replace(b"\0", b" ").decode(errors="replace")
            stack.append(child)
    return found


def with_environment(value: bytes) -> dict[int, str]:
    """Living processes whose environment holds `value` (the ones we may read)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                if value in (entry / "environ").read_bytes():
                    found[int(entry.name)] = (
                        (entry / "cmdline").read_bytes().decode(errors="replace")
                    )
            except OSError:
                continue  # ended meanwhile, or not ours
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_middle_of_a_run_stops_its_function_processes(
    tmp_path: Path, guard: list[subprocess.Popen[str]], signum: signal.Signals
) -> None:
    """Signalled while its ingest is stuck reading an API that drips its answer (a fetch
    that would last until PIPELINE_REQUEST_DEADLINE_S, three times over), `localcloud run`
    stops at once and ends its function processes too, with the moto server and PostgreSQL."""
    dripping = SourceFaults({"slow-drip": "users"}, drip_interval=3.0)
    with FakeApiServer(records=250, seed=11, source_faults=dripping) as api:
        process = start(["run", "--json", "--api-url", api.url, "--state-dir", "state"], tmp_path)
        guard.append(process)
        deadline = time.monotonic() + READY_TIMEOUT_S
        started: dict[int, str] = {}
        while not any("localcloud.triggers.function_process" in c for c in started.values()):
            assert process.poll() is None, f"exited with {process.returncode}"
            assert time.monotonic() < deadline, "no function process ever started"
            time.sleep(0.2)
            started = descendants(process.pid)
        time.sleep(1.0)  # the ingest's invocation is under way (not a bound on anything)
        started = descendants(process.pid)
        _stop_mid_run(process, started, signum, tmp_path)


def _stop_mid_run(
    process: subprocess.Popen[str], started: dict[int, str], signum: signal.Signals, tmp_path: Path
) -> None:
    processes = json.loads((tmp_path / "state" / "processes.json").read_text())
    moto = (Path("/proc") / str(processes["moto"]) / "cmdline").read_bytes().split(b"\0")
    endpoint = b"127.0.0.1:" + moto[moto.index(b"-p") + 1]  # in every function's environment
    process.send_signal(signum)
    assert stopped(process) == 128 + signum
    assert_gone(processes)
    # ... and so are its function processes: those it had, and any a driver's thread started
    # while it stopped (Lambda's retry of an invocation whose process was killed)
    deadline = time.monotonic() + 5
    while (left := with_environment(endpoint)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left
    assert not {pid: c for pid, c in started.items() if alive(pid)}


@pytest.mark.parametrize("then", ["down", "up"])
def test_what_a_killed_up_left_behind_is_stopped_by_the_next_down_or_up(
    tmp_path: Path, guard: list[subprocess.Popen[str]], then: str
) -> None:
    """`up` killed with SIGKILL runs no cleanup: its moto server and PostgreSQL outlive it.
    The next `down` finds them in the state file and stops them; so does the next `up`, before
    it replaces the state file with its own."""
    up = start(["up", "--json", "--records", "10"], tmp_path)
    guard.append(up)
    first_line(up)
    processes = json.loads((tmp_path / ".localcloud" / "up.json").read_text())["processes"]
    up.kill()
    assert stopped(up) == -signal.SIGKILL
    orphans = {name: int(processes[name]) for name in ("moto", "postgres")}
    assert all(alive(pid) for pid in orphans.values()), orphans
    attached = localcloud("run", "--attach", "--json", cwd=tmp_path)
    assert attached.returncode == 1
    assert "no local cloud is up" in attached.stderr
    stopped_orphans = (
        f"stopped the orphaned moto server (pid {orphans['moto']})",
        f"stopped the orphaned PostgreSQL (pid {orphans['postgres']})",
    )

    if then == "down":
        down = localcloud("down", cwd=tmp_path, timeout=STOP_TIMEOUT_S)
        assert down.returncode == 0, down.stderr
        assert all(line in down.stderr for line in stopped_orphans), down.stderr
        assert_gone(processes)
        assert not (tmp_path / ".localcloud" / "up.json").exists()
        return
    again = start(["up", "--json", "--records", "10"], tmp_path)
    guard.append(again)
    first_line(again)
    assert_gone(processes)
    log = (tmp_path / "stderr.log").read_text()
    assert all(line in log for line in stopped_orphans), log
    state = json.loads((tmp_path / ".localcloud" / "up.json").read_text())
    assert state["pid"] == again.pid
    down = localcloud("down", cwd=tmp_path, timeout=STOP_TIMEOUT_S)
    assert down.returncode == 0, down.stderr
    assert stopped(again) == 0
    assert_gone(state["processes"])


def test_down_without_a_cloud_says_so(tmp_path: Path) -> None:
    result = localcloud("down", cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert "no local cloud is up" in result.stderr


def test_the_shell_s_pipeline_settings_are_deployed_but_not_the_cloud_s_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from localcloud.cli import CLOUD_SETTINGS, shell_settings

    monkeypatch.setenv("PIPELINE_REQUEST_DEADLINE_S", "5")
    monkeypatch.setenv("PIPELINE_API_URL", "http://127.0.0.1:9")  # --api-url decides it
    monkeypatch.setenv("NOT_PIPELINE_PAGE_SIZE", "3")
    chosen = shell_settings()
    assert chosen["PIPELINE_REQUEST_DEADLINE_S"] == "5"
    assert "PIPELINE_API_URL" not in chosen
    assert "NOT_PIPELINE_PAGE_SIZE" not in chosen
    assert not CLOUD_SETTINGS & set(chosen)
