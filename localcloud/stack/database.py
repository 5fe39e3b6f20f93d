"""The local cloud's PostgreSQL: a database and login role of its own, its credentials in the
stage's secret (as RDS keeps them on AWS).

On the cloud's own embedded server (started in the background while moto starts, stopped with
the cloud) or on a running server a test gives (the cloud only creates and drops its database).
"""

from __future__ import annotations

import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from chalicelib.load.sinks.postgres_connection import Credentials
from infra.postgres_secret import ensure_postgres_secret
from localcloud.emulators.postgres import EmbeddedPostgres


class CloudDatabase:
    """The cloud's database: the server it runs on, its name and its credentials."""

    def __init__(self, server: EmbeddedPostgres | None) -> None:
        self.server = server
        self.owns_server = server is None
        """Ours to start and stop; False: a running server given by the caller (tests)."""
        self.name: str | None = None
        self.credentials: Credentials | None = None
        self._started: Future[Credentials] | None = None

    def start(self, wanted: bool) -> None:
        """Start our embedded PostgreSQL in the background while moto starts."""
        if not (self.owns_server and wanted):
            return
        server = self.server = EmbeddedPostgres()
        database = self.name = f"moovitamix_{uuid.uuid4().hex[:8]}"
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres")
        self._started = pool.submit(lambda: server.start().create_database(database))
        pool.shutdown(wait=False)  # the thread ends once the database is ready

    def prepare(self, wanted: bool, secret_name: str) -> None:
        """A database and login role for this cloud, its credentials in Secrets Manager."""
        if self._started is not None:
            credentials = self._started.result()
        elif self.server is not None and wanted:
            self.name = f"moovitamix_{uuid.uuid4().hex[:8]}"
            credentials = self.server.create_database(self.name)
        else:
            return
        # on AWS, RDS keeps the credentials in the stage's secret; here they are this cloud's
        self.credentials = credentials
        ensure_postgres_secret(secret_name, credentials)

    def stop(self) -> None:
        if self._started is not None:
            self._started.exception()  # wait for a start still running
            self._started = None
        if self.server is None:
            return
        if self.owns_server:
            self.server.stop()
            self.server = None
        elif self.name is not None:
            self.server.drop_database(self.name)
        self.name = None

    def processes(self) -> dict[str, Any]:
        """The server's process, when the cloud started it (`down` stops what `up` left)."""
        found: dict[str, Any] = {}
        if self.owns_server and self.server is not None and self.server.data_dir:
            found["postgres_data_dir"] = str(self.server.data_dir)
            pid_file = self.server.data_dir / "postmaster.pid"
            if pid_file.exists():
                found["postgres"] = int(pid_file.read_text().split()[0])
        return found

    def admin_dsn(self) -> str | None:
        """The server's admin DSN to the cloud's database (chaos's postgres-disconnect)."""
        if self.server is None or self.name is None:
            return None
        return self.server.admin_dsn(self.name)
