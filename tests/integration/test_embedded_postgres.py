"""The local cloud's embedded PostgreSQL: template, passwords, clean-up."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from chalicelib.load.sinks.postgres_connection import Credentials
from localcloud.emulators.postgres import EmbeddedPostgres, ensure_template, template_dir
from tests.helpers.postgres_helpers import connect


def test_roles_other_than_the_superuser_need_their_password(
    postgres_credentials: Credentials,
) -> None:
    with connect(postgres_credentials) as connection:
        assert connection.execute("SELECT current_user").fetchone() == (
            postgres_credentials.username,
        )
    for password in ("wrong", ""):
        refused = Credentials(**{**postgres_credentials.__dict__, "password": password})
        with pytest.raises(psycopg.OperationalError, match="password"):
            connect(refused)


def test_the_generated_password_never_reaches_the_server_in_clear(
    postgres_server: EmbeddedPostgres, postgres_credentials: Credentials
) -> None:
    with postgres_server.admin_connect() as admin:
        stored = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
            (postgres_credentials.username,),
        ).fetchone()
    assert stored is not None
    assert stored[0].startswith("SCRAM-SHA-256$")
    assert postgres_credentials.password not in stored[0]


def test_drop_database_removes_database_and_role(postgres_server: EmbeddedPostgres) -> None:
    credentials = postgres_server.create_database("test_dropped")
    held = connect(credentials)  # an open session does not prevent it
    postgres_server.drop_database("test_dropped")
    held.close()
    with postgres_server.admin_connect() as admin:
        assert (
            admin.execute("SELECT 1 FROM pg_database WHERE datname = 'test_dropped'").fetchall()
            == []
        )
        assert (
            admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'test_dropped'").fetchall() == []
        )


def test_stop_deletes_the_data_and_the_server_is_gone() -> None:
    server = EmbeddedPostgres().start()
    data_dir = server.data_dir
    assert data_dir is not None
    host, port = server.host, server.port
    credentials = server.create_database("gone")
    assert (data_dir / "PG_VERSION").exists()
    server.stop()
    assert not data_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=2)
    assert credentials.dbname == "gone"
    server.stop()  # stopping twice is harmless


def test_the_template_is_built_once_even_by_racing_processes(tmp_path: Path) -> None:
    results: list[Path] = []
    failures: list[BaseException] = []

    def build() -> None:
        try:
            results.append(ensure_template(tmp_path))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert results == [template_dir(tmp_path)] * 2
    assert [path.name for path in tmp_path.iterdir()] == [template_dir(tmp_path).name]
    assert "scram-sha-256" in (template_dir(tmp_path) / "pg_hba.conf").read_text()
    assert ensure_template(tmp_path) == template_dir(tmp_path)  # reused, not rebuilt
