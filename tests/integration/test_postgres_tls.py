"""TLS that verifies: the pipeline's connections check the PostgreSQL server's certificate.

An embedded PostgreSQL serves TLS on 127.0.0.1 (PostgreSQL's own TLS negotiation, through
`localcloud.emulators.tls_front`) with a certificate issued by a CA made for this test (the
`cryptography` package). The pipeline's own connection code, reading its
credentials from the secret in (moto's) Secrets Manager as in AWS, connects with
`verify-full` against that CA, and refuses the same server when given another CA (same
name, other key), a certificate for another host, or no CA bundle at all.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from cryptography import x509

from chalicelib.load.sinks.postgres_connection import (
    Credentials,
    connection_factory,
    tls_parameters,
)
from chalicelib.settings import Settings
from infra.postgres_secret import ensure_postgres_secret
from localcloud.emulators.postgres import TLS_HOST, EmbeddedPostgres
from tests.helpers.tls_helpers import make_authority, server_tls


@dataclass(frozen=True)
class TlsServer:
    credentials: Credentials
    right_ca: Path
    wrong_ca: Path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A PostgreSQL serving a certificate for 127.0.0.1 from a test CA, and two CA files."""
    folder = tmp_path_factory.mktemp("tls")
    authority = make_authority()
    impostor = make_authority()  # same name, different key: only the signature tells them apart
    right, wrong = folder / "right-ca.pem", folder / "wrong-ca.pem"
    right.write_bytes(authority.pem())
    wrong.write_bytes(impostor.pem())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(TLS_HOST)),
        x509.DNSName("localhost"),
    ]
    with EmbeddedPostgres(tls=server_tls(authority, names)) as server:
        credentials = server.create_database(f"tls_{uuid.uuid4().hex[:8]}")
        yield TlsServer(credentials, right, wrong)


def settings_for(aws_env: str, credentials: Credentials, **tls: str) -> Settings:
    """Settings as a deployed function has them: the credentials come from the secret."""
    arn = ensure_postgres_secret(f"test-tls-{uuid.uuid4().hex[:8]}", credentials)
    return Settings(postgres_secret_arn=arn, **tls)  # type: ignore[arg-type]


def test_verify_full_connects_with_the_right_ca(aws_env: str, tls_server: TlsServer) -> None:
    settings = settings_for(
        aws_env,
        tls_server.credentials,
        postgres_sslmode="verify-full",
        postgres_sslrootcert=str(tls_server.right_ca),
    )
    with connection_factory(settings)(False) as connection:
        assert connection.info.host == TLS_HOST
        assert connection.pgconn.ssl_in_use
        # a real session: the role authenticated with its SCRAM password through TLS
        row = connection.execute("SELECT current_user").fetchone()
        assert row == (tls_server.credentials.username,)


def test_a_wrong_ca_fails_to_connect(aws_env: str, tls_server: TlsServer) -> None:
    settings = settings_for(
        aws_env,
        tls_server.credentials,
        postgres_sslmode="verify-full",
        postgres_sslrootcert=str(tls_server.wrong_ca),
    )
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connection_factory(settings)(False)


def test_a_certificate_for_another_host_fails_verify_full(aws_env: str, tmp_path: Path) -> None:
    """The CA is right, but the certificate names another host than the one connected to."""
    authority = make_authority()
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(authority.pem())
    elsewhere = server_tls(authority, [x509.DNSName("db.elsewhere.internal")])
    with EmbeddedPostgres(tls=elsewhere) as server:
        credentials = server.create_database(f"tls_{uuid.uuid4().hex[:8]}")
        verify_ca = settings_for(
            aws_env, credentials, postgres_sslmode="verify-ca", postgres_sslrootcert=str(bundle)
        )
        with connection_factory(verify_ca)(False) as connection:  # the chain alone is fine
            assert connection.pgconn.ssl_in_use
        verify_full = settings_for(
            aws_env, credentials, postgres_sslmode="verify-full", postgres_sslrootcert=str(bundle)
        )
        with pytest.raises(psycopg.OperationalError, match="does not match host name"):
            connection_factory(verify_full)(False)


def test_verify_full_without_a_bundle_fails_closed(
    aws_env: str, tls_server: TlsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bundle configured and none in ~/.postgresql: no connection, not an unchecked one."""
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = settings_for(aws_env, tls_server.credentials, postgres_sslmode="verify-full")
    with pytest.raises(psycopg.OperationalError, match="root certificate file"):
        connection_factory(settings)(False)


def test_plaintext_is_refused_by_the_server(aws_env: str, tls_server: TlsServer) -> None:
    settings = settings_for(aws_env, tls_server.credentials, postgres_sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="accepts TLS connections only"):
        connection_factory(settings)(False)


def test_verify_full_is_the_default_and_relative_bundles_come_from_the_package() -> None:
    assert Settings().postgres_sslmode == "verify-full"
    parameters = tls_parameters(
        Settings(postgres_sslrootcert="chalicelib/certs/rds-global-bundle.pem")
    )
    assert parameters["sslmode"] == "verify-full"
    bundle = Path(parameters["sslrootcert"])
    assert bundle.is_absolute()
    assert bundle == Path(__file__).resolve().parents[2] / "chalicelib/certs/rds-global-bundle.pem"
