"""Migrations: from empty, re-applied, concurrent, and refusing a history that does not match."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.load.sinks.postgres_migrations import (
    Migration,
    MigrationError,
    load_migrations,
    migrate,
)
from tests.helpers.postgres_helpers import connect, make_sink

TABLES = {"users", "tracks", "listen_history", "listen_history_item", "schema_migrations"}
VIEWS = {
    "user_track_interactions",
    "track_popularity",
    "user_genre_affinity",
    "user_listening_summary",
    "unresolved_references",
}


def relations(connection: psycopg.Connection) -> dict[str, str]:
    rows = connection.execute(
        "SELECT c.relname, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')"
    ).fetchall()
    return {name: kind for name, kind in rows}


def schema_snapshot(connection: psycopg.Connection) -> list[tuple[object, ...]]:
    """Columns, constraints and view definitions: what a re-run must leave unchanged."""
    columns = connection.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
    ).fetchall()
    constraints = connection.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall()
    views = connection.execute(
        "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1"
    ).fetchall()
    return [*columns, *constraints, *views]


def test_migration_files_are_versioned_and_ordered() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == ["0001", "0002", "0003", "0004"]
    assert [m.name for m in migrations] == ["schema", "views", "version_rank", "run_rows"]


def test_migrates_an_empty_database(postgres_credentials: Credentials) -> None:
    with connect(postgres_credentials) as connection:
        assert relations(connection) == {}
        applied = migrate(connection)
        assert applied == ["0001", "0002", "0003", "0004"]
        kinds = relations(connection)
        assert {name for name, kind in kinds.items() if kind == "r"} == TABLES
        assert {name for name, kind in kinds.items() if kind == "v"} == VIEWS
        recorded = connection.execute(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        ).fetchall()
        assert recorded == [(m.version, m.name, m.checksum) for m in load_migrations()]


def test_reapplying_changes_nothing(postgres_credentials: Credentials) -> None:
    with connect(postgres_credentials) as connection:
        migrate(connection)
        before = schema_snapshot(connection)
        applied_at = connection.execute("SELECT applied_at FROM schema_migrations").fetchall()
        assert migrate(connection) == []
        assert migrate(connection) == []
        assert schema_snapshot(connection) == before
        assert connection.execute("SELECT applied_at FROM schema_migrations").fetchall() == (
            applied_at
        )


def test_only_pending_migrations_are_applied(postgres_credentials: Credentials) -> None:
    first, second, *_ = load_migrations()
    with connect(postgres_credentials) as connection:
        assert migrate(connection, [first]) == ["0001"]
        assert "user_track_interactions" not in relations(connection)
        assert migrate(connection, [first, second]) == ["0002"]
        assert "user_track_interactions" in relations(connection)


def test_concurrent_migrations_apply_once(postgres_credentials: Credentials) -> None:
    """Lambdas starting together: all succeed, one applies everything, the others wait."""
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[list[str]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def start_lambda() -> None:
        try:
            with connect(postgres_credentials) as connection:
                barrier.wait(timeout=30)
                applied = migrate(connection)
            with lock:
                results.append(applied)
        except BaseException as error:
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=start_lambda) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert sorted(results) == [[], [], [], ["0001", "0002", "0003", "0004"]]
    with connect(postgres_credentials) as connection:
        count = connection.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert count == (4,)


def test_a_failing_migration_leaves_nothing_behind(postgres_credentials: Credentials) -> None:
    broken = Migration("0001", "broken", "CREATE TABLE half_done (id int); SELECT 1/0;")
    with connect(postgres_credentials) as connection:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(connection, [broken])
        assert relations(connection) == {}


def test_an_edited_migration_is_refused(postgres_credentials: Credentials) -> None:
    first = load_migrations()[0]
    with connect(postgres_credentials) as connection:
        migrate(connection, [first])
        edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(connection, [edited])


def test_a_database_newer_than_the_code_is_refused(postgres_credentials: Credentials) -> None:
    with connect(postgres_credentials) as connection:
        migrate(connection)
        with pytest.raises(MigrationError, match="does not"):
            migrate(connection, load_migrations()[:1])


def test_badly_named_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_schema.sql").write_text("SELECT 1;")
    (tmp_path / "schema_v2.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_schema.sql").write_text("SELECT 1;")
    (tmp_path / "0001_other.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share a version"):
        load_migrations(tmp_path)


def test_the_sink_migrates_on_first_use(postgres_credentials: Credentials) -> None:
    sink = make_sink(postgres_credentials)
    assert sink.count("users") == 0  # the first connection applied the migrations
    with connect(postgres_credentials) as connection:
        assert set(relations(connection)) == TABLES | VIEWS


def test_the_version_rank_migration_keeps_the_fetch_instant_of_existing_rows(
    postgres_credentials: Credentials,
) -> None:
    """Rows stored before 0003 get `fetched_at_utc` from their text when it is the pipeline's
    ISO form, NULL (ranks before any fetch) otherwise."""
    first, second, third, *_ = load_migrations()
    with connect(postgres_credentials) as connection:
        migrate(connection, [first, second])
        for user_id, fetched_at in ((1, "2026-01-02T03:04:05.000006+00:00"), (2, "t")):
            connection.execute(
                "INSERT INTO users (id, first_name, last_name, email, gender, favorite_genres, "
                "created_at, updated_at, run_id, fetched_at) "
                "VALUES (%s, 'a', 'b', 'c', 'd', 'e', now(), now(), 'r', %s)",
                (user_id, fetched_at),
            )
        assert migrate(connection, [first, second, third]) == ["0003"]
        rows = connection.execute("SELECT id, fetched_at_utc FROM users ORDER BY id").fetchall()
    assert rows == [(1, datetime(2026, 1, 2, 3, 4, 5, 6)), (2, None)]
