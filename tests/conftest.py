"""Shared fixtures: a moto server and an embedded PostgreSQL per test session (per xdist
worker: each has its own, on free ports and in its own temporary folders), and the tier markers.

Tests never reach the internet: AWS is a moto server on loopback, the API is the built-in fake.
The tiers are folders (docs/testing.md): tests/unit, tests/integration, tests/e2e; every test
gets its folder's marker, so `-m unit` and `pytest tests/unit` select the same tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from chalicelib import wiring
from chalicelib.load.sinks import postgres_connection
from chalicelib.load.sinks.postgres_connection import Credentials
from localcloud.emulators.moto_process import MotoServer
from localcloud.emulators.postgres import EmbeddedPostgres

# No wall-clock judgement in tests: a 2-core CI machine running servers beside the test is slow
# at times, which says nothing about the code. Tests that need fewer examples say so themselves.
settings.register_profile("project", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("project")

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server process for the whole session; tests use unique resource names."""
    with MotoServer(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point boto3 and PynamoDB at the session's moto server for one test."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    wiring.reset()
    yield moto_server.url
    wiring.reset()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL server for the whole session; tests get their own database."""
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
def postgres_credentials(postgres_server: EmbeddedPostgres) -> Iterator[Credentials]:
    """A new, empty database and its own login role (with a password) for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    credentials = postgres_server.create_database(name)
    yield credentials
    postgres_connection.close_all()
    postgres_server.drop_database(name)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)


def pytest_configure(config: pytest.Config) -> None:
    # Never let a developer's real AWS profile leak into a test run.
    os.environ.pop("AWS_PROFILE", None)
