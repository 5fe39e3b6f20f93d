"""A function's init (`chalicelib.execution_environment`): clients and connection made before
the first invocation, and an init that never fails the environment."""

from __future__ import annotations

import gc
import logging
import socket
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import execution_environment, wiring
from chalicelib.aws import clients as aws
from chalicelib.load.sinks.postgres_connection import Credentials, database_for
from infra.postgres_secret import ensure_postgres_secret

ROLES = sorted(execution_environment.ROLE_CLIENTS)


@pytest.fixture(autouse=True)
def collector_thresholds() -> Iterator[None]:
    """`prepare` sets the process's collector thresholds: put back what the session had."""
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@given(
    prefix=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=30),
    role=st.sampled_from(ROLES),
)
def test_a_role_is_found_in_lambdas_name_for_the_function(prefix: str, role: str) -> None:
    assert execution_environment.role(f"{prefix}-{role}") == role
    assert execution_environment.role(role) == role
    assert execution_environment.role(f"{prefix}-{role}x") is None
    assert execution_environment.role(f"{prefix}{role}") in (None, role)  # role ends the name


def test_outside_lambda_init_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    before = gc.get_threshold()
    assert execution_environment.prepare() is None
    assert gc.get_threshold() == before


def _use_postgres(monkeypatch: pytest.MonkeyPatch, secret_arn: str) -> None:
    monkeypatch.setenv("PIPELINE_SINKS", "dynamodb,postgres")
    monkeypatch.setenv("PIPELINE_POSTGRES_SECRET_ARN", secret_arn)
    monkeypatch.delenv("PIPELINE_POSTGRES_DSN", raising=False)
    wiring.reset()


def test_the_reconcile_function_starts_with_its_clients_and_connection(
    aws_env: str, postgres_credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = ensure_postgres_secret(f"test-init-{uuid.uuid4().hex[:8]}", postgres_credentials)
    _use_postgres(monkeypatch, arn)
    aws.client.cache_clear()
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "moovitamix-pipeline-local-reconcile")
    assert execution_environment.prepare() == "reconcile"
    assert aws.client.cache_info().currsize >= len(execution_environment.ROLE_CLIENTS["reconcile"])
    database = database_for(wiring.get_settings())
    assert database._open, "no connection was opened at init"
    assert database._open[0].info.user == postgres_credentials.username
    assert gc.get_threshold() == execution_environment.COLLECTOR_THRESHOLDS


def test_an_unreachable_database_leaves_the_work_to_the_first_invocation(
    aws_env: str,
    postgres_credentials: Credentials,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = Credentials(**{**postgres_credentials.__dict__, "port": port})
    arn = ensure_postgres_secret(f"test-init-{uuid.uuid4().hex[:8]}", closed)
    _use_postgres(monkeypatch, arn)
    monkeypatch.setenv("PIPELINE_POSTGRES_CONNECT_TIMEOUT_S", "2")
    caplog.set_level(logging.INFO, logger="moovitamix")
    assert execution_environment.prepare("moovitamix-pipeline-local-load") == "load"
    warnings = [r for r in caplog.records if r.getMessage().startswith("init left work")]
    assert len(warnings) == 1
    assert getattr(warnings[0], "function", None) == "load"
    assert not database_for(wiring.get_settings())._open
