"""Connections to the PostgreSQL store: credentials, one connection per thread, reconnects.

In AWS the credentials are an RDS secret in Secrets Manager (`PIPELINE_POSTGRES_SECRET_ARN`),
read once per process and read again when the database refuses them (the password was
rotated). For local use a libpq connection string in `PIPELINE_POSTGRES_DSN` is accepted.
Neither the password nor the DSN is ever logged or put in an error message.

A Lambda process runs one invocation at a time, so it holds one connection, opened on first
use and kept warm across invocations. Threads (the local cloud runs several shard consumers
in one process) each get their own, because a psycopg connection carries one transaction at
a time. The first connection of a process applies the pending migrations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg

from chalicelib.aws import clients as aws
from chalicelib.load.sinks.postgres_migrations import migrate
from chalicelib.observability.logging import logger
from chalicelib.settings import Settings

T = TypeVar("T")

PACKAGE_ROOT = Path(__file__).resolve().parents[3]
"""The project root locally, /var/task on Lambda: where Chalice unpacks app.py and chalicelib."""
APPLICATION_NAME = "moovitamix-pipeline"
STATEMENT_TIMEOUT_MS = 60_000
"""Shorter than the load function's timeout, so a stuck statement fails the batch cleanly."""


class PostgresConfigError(ValueError):
    """The settings do not say how to reach PostgreSQL, or the secret is malformed."""


@dataclass(frozen=True)
class Credentials:
    """What an RDS secret holds; `repr` never shows the password."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    dbname: str

    @classmethod
    def from_secret(cls, secret_string: str) -> Credentials:
        """Parse the JSON an RDS secret holds; port defaults to 5432, dbname to postgres."""
        try:
            document = orjson.loads(secret_string)
        except orjson.JSONDecodeError:
            raise PostgresConfigError("the PostgreSQL secret is not JSON") from None
        if not isinstance(document, dict):
            raise PostgresConfigError("the PostgreSQL secret is not a JSON object")
        missing = [key for key in ("host", "username", "password") if not document.get(key)]
        if missing:
            raise PostgresConfigError(f"the PostgreSQL secret lacks {', '.join(missing)}")
        try:
            port = int(document.get("port") or 5432)
        except (TypeError, ValueError):
            raise PostgresConfigError("the PostgreSQL secret's port is not a number") from None
        return cls(
            host=str(document["host"]),
            port=port,
            username=str(document["username"]),
            password=str(document["password"]),
            dbname=str(document.get("dbname") or "postgres"),
        )


def read_secret(secret_id: str) -> Credentials:
    """Credentials from Secrets Manager (an ARN or a secret name)."""
    response = aws.client("secretsmanager").get_secret_value(SecretId=secret_id)
    return Credentials.from_secret(response["SecretString"])


def tls_parameters(settings: Settings) -> dict[str, Any]:
    """libpq's `sslmode` and, when set, `sslrootcert` (relative paths from the package root).

    With `verify-full` libpq encrypts, checks that the server's certificate chains to a CA
    of the bundle and that it names the host it connects to; a missing bundle fails the
    connection (never a silent fallback to plaintext or to an unchecked server).
    """
    parameters: dict[str, Any] = {"sslmode": settings.postgres_sslmode}
    if settings.postgres_sslrootcert:
        bundle = Path(settings.postgres_sslrootcert)
        if settings.postgres_sslrootcert != "system" and not bundle.is_absolute():
            bundle = PACKAGE_ROOT / bundle
        parameters["sslrootcert"] = str(bundle)
    return parameters


def connection_factory(settings: Settings) -> Callable[[bool], psycopg.Connection]:
    """A function opening a new connection; its argument asks to re-read the credentials."""
    common: dict[str, Any] = {
        "autocommit": True,
        "application_name": APPLICATION_NAME,
        "connect_timeout": settings.postgres_connect_timeout_s,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
    }
    if settings.postgres_secret_arn:
        secret_id = settings.postgres_secret_arn
        cache: dict[str, Credentials] = {}

        def connect_with_secret(refresh: bool) -> psycopg.Connection:
            if refresh or "credentials" not in cache:
                cache["credentials"] = read_secret(secret_id)
            credentials = cache["credentials"]
            return psycopg.connect(
                host=credentials.host,
                port=credentials.port,
                user=credentials.username,
                password=credentials.password,
                dbname=credentials.dbname,
                **tls_parameters(settings),
                **common,
            )

        return connect_with_secret
    if settings.postgres_dsn is not None:
        dsn = settings.postgres_dsn.get_secret_value()

        def connect_with_dsn(refresh: bool) -> psycopg.Connection:
            try:
                return psycopg.connect(dsn, **common)
            except psycopg.ProgrammingError:
                # libpq quotes the malformed part of the string, which may be the password
                raise PostgresConfigError(
                    "PIPELINE_POSTGRES_DSN is not a valid connection string"
                ) from None

        return connect_with_dsn
    raise PostgresConfigError(
        "the postgres sink needs PIPELINE_POSTGRES_SECRET_ARN (AWS, LocalStack) "
        "or PIPELINE_POSTGRES_DSN (local use)"
    )


class PostgresDatabase:
    """Per-thread connections to one database, migrated once per process."""

    def __init__(self, connect: Callable[[bool], psycopg.Connection]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[psycopg.Connection] = []
        self._migrated = False

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work` in one transaction; retried once on a dropped connection or a deadlock.

        Retrying is safe because every write is idempotent and newest-wins.
        """
        for attempt in (1, 2):
            connection = self.connection()
            try:
                with connection.transaction():
                    return work(connection)
            except psycopg.OperationalError as error:
                dropped = connection.closed or connection.broken
                if dropped:
                    self._discard(connection)
                # SQLSTATE class 40: deadlock_detected, serialization_failure
                rolled_back = (error.sqlstate or "").startswith("40")
                if attempt == 2 or not (dropped or rolled_back):
                    raise
                logger.warning(
                    "postgres transaction retried",
                    extra={"step": "load", "reason": type(error).__name__},
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def connection(self) -> psycopg.Connection:
        """This thread's open connection; a new one if it never had one or it was dropped."""
        connection: psycopg.Connection | None = getattr(self._local, "connection", None)
        if connection is not None and not (connection.closed or connection.broken):
            return connection
        if connection is not None:
            self._discard(connection)
        connection = self._open_connection()
        self._local.connection = connection
        with self._lock:
            self._open.append(connection)
        return connection

    def _open_connection(self) -> psycopg.Connection:
        try:
            connection = self._connect(False)
        except psycopg.OperationalError as error:
            if "password authentication failed" not in str(error):
                raise
            connection = self._connect(True)  # the secret may have been rotated since
        with self._lock:
            if not self._migrated:
                try:
                    applied = migrate(connection)
                except BaseException:
                    connection.close()
                    raise
                self._migrated = True
                logger.info("postgres schema ready", extra={"step": "load", "applied": applied})
        return connection

    def _discard(self, connection: psycopg.Connection) -> None:
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        connection.close()

    def close(self) -> None:
        """Close every connection (all threads); the next use opens new ones."""
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            connection.close()


_databases: dict[Settings, PostgresDatabase] = {}
_databases_lock = threading.Lock()


def database_for(settings: Settings) -> PostgresDatabase:
    """The process's database handle for these settings (made once, connects lazily)."""
    with _databases_lock:
        database = _databases.get(settings)
        if database is None:
            database = PostgresDatabase(connection_factory(settings))
            _databases[settings] = database
        return database


def close_all() -> None:
    """Close and forget every handle (the environment changed: tests, the local cloud)."""
    with _databases_lock:
        databases = list(_databases.values())
        _databases.clear()
    for database in databases:
        database.close()
