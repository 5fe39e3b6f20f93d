"""Versioned SQL migrations, applied by the pipeline itself when it first connects.

The migrations are the files `chalicelib/migrations/NNNN_name.sql`, applied in order and
recorded in `schema_migrations` with a checksum. Everything runs in one transaction that
first takes a transaction-level advisory lock: when two Lambdas start at once, the second
waits for the first to commit and then finds nothing left to do. PostgreSQL DDL is
transactional, so a failed migration leaves no half-built schema behind.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
ADVISORY_LOCK_KEY = 0x6D6F6F76  # "moov": one lock id for the schema of this project
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's migration history does not match the migration files."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file, sorted by version; a badly named .sql file is an error."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        migrations.append(Migration(match[1], match[2], path.read_text(encoding="utf-8")))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return migrations


def migrate(connection: psycopg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending migrations; return the versions applied by this call.

    Raises MigrationError when an applied migration's file has changed since (edit a schema
    by adding a migration, never by rewriting one) or the database knows a version that no
    file has (this code is older than the schema).
    """
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    text PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = connection.execute("SELECT version, checksum FROM schema_migrations").fetchall()
        applied = {str(version): str(checksum) for version, checksum in rows}
        known = {migration.version for migration in migrations}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(f"the database has migrations this code does not: {unknown}")
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} was changed after "
                        "it was applied; add a new migration instead"
                    )
                continue
            connection.execute(migration.sql.encode())  # no parameters: may hold many statements
            connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.version)
    return applied_now
