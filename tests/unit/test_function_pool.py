"""A function's pool of warm processes (`localcloud/triggers/function_pool.py`) once closed.

`localcloud run` closes the pools when it is interrupted (SIGINT, SIGTERM), killing the
processes; a driver's thread may still call a pool then (Lambda's retry of the invocation
whose process was killed). A closed pool must refuse that call rather than start a process
that would outlive the command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localcloud.triggers.function_pool import FunctionError, FunctionPool, HostConfig


def closed_pool(tmp_path: Path) -> FunctionPool:
    pool = FunctionPool(
        HostConfig(
            function="ingest",
            environment={},
            log_path=tmp_path / "lambda.log",
            output_path=tmp_path / "ingest.out",
        )
    )
    pool.close(kill=True)
    return pool


def test_a_closed_pool_refuses_an_invocation_and_starts_no_process(tmp_path: Path) -> None:
    pool = closed_pool(tmp_path)
    with pytest.raises(FunctionError, match="the ingest function is stopped"):
        pool({"id": "retry"}, None)
    assert pool.processes == 0
    assert pool.invocations == 0
    assert not (tmp_path / "ingest.out").exists()  # no process was ever started


def test_a_closed_pool_is_not_warmed(tmp_path: Path) -> None:
    pool = closed_pool(tmp_path)
    pool.warm(2)
    assert pool.processes == 0
    assert not (tmp_path / "ingest.out").exists()
