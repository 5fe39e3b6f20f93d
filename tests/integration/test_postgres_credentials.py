"""How the sink reaches PostgreSQL: the RDS secret (moto), a local DSN, and no password leaks."""

from __future__ import annotations

import logging
import uuid

import orjson
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.load.sinks.postgres import PostgresSink
from chalicelib.load.sinks.postgres_connection import Credentials, PostgresConfigError, database_for
from chalicelib.settings import Settings
from infra.postgres_secret import ensure_postgres_secret, secret_document
from localcloud.emulators.postgres import EmbeddedPostgres
from tests.helpers.postgres_helpers import dsn, envelope, user


def secret_name() -> str:
    return f"test-postgres-{uuid.uuid4().hex[:8]}"


def test_the_sink_connects_with_the_secret(
    aws_env: str, postgres_credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = ensure_postgres_secret(secret_name(), postgres_credentials)
    monkeypatch.setenv("PIPELINE_SINKS", "dynamodb,postgres")
    monkeypatch.setenv("PIPELINE_POSTGRES_SECRET_ARN", arn)
    monkeypatch.delenv("PIPELINE_POSTGRES_DSN", raising=False)
    wiring.reset()
    sinks = wiring.build_sinks(wiring.get_settings())
    assert [sink.name for sink in sinks] == ["postgres", "dynamodb"]  # DynamoDB is written last
    postgres = sinks[0]
    assert isinstance(postgres, PostgresSink)
    assert postgres.write("users", [envelope("users", user(1))])
    assert postgres.count("users") == 1
    connection = postgres.database.connection()
    assert connection.info.user == postgres_credentials.username
    assert connection.info.dbname == postgres_credentials.dbname


def test_a_rotated_password_is_read_again(
    aws_env: str,
    postgres_server: EmbeddedPostgres,
    postgres_credentials: Credentials,
) -> None:
    name = secret_name()
    ensure_postgres_secret(name, postgres_credentials)
    database = database_for(Settings(postgres_secret_arn=name))
    sink = PostgresSink(Settings(postgres_secret_arn=name), database)
    sink.write("users", [envelope("users", user(1))])
    rotated = Credentials(**{**postgres_credentials.__dict__, "password": "rotated-Pa55"})
    with postgres_server.admin_connect() as admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(rotated.username), sql.Literal(rotated.password)
            )
        )
    ensure_postgres_secret(name, rotated)
    database.close()  # the process's connection is gone (e.g. a cold start)
    assert sink.write("users", [envelope("users", user(2))])  # cached password fails, re-read
    assert sink.count("users") == 2


def test_a_wrong_password_fails_without_showing_it(
    aws_env: str, postgres_credentials: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    password = "Wr0ng-but-s3cret-" + uuid.uuid4().hex
    wrong = Credentials(**{**postgres_credentials.__dict__, "password": password})
    name = secret_name()
    ensure_postgres_secret(name, wrong)
    sink = PostgresSink(Settings(postgres_secret_arn=name))
    caplog.set_level(logging.INFO)  # what Lambda logs (botocore's DEBUG would show any secret)
    caplog.set_level(logging.DEBUG, logger="moovitamix")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as info:
        sink.write("users", [envelope("users", user(1))])
    assert password not in str(info.value)
    assert password not in caplog.text


def test_the_dsn_is_accepted_for_local_use(postgres_credentials: Credentials) -> None:
    sink = PostgresSink(Settings(postgres_dsn=dsn(postgres_credentials)))
    assert sink.write("users", [envelope("users", user(1))])
    assert sink.rows("users") == [user(1)]


def test_a_malformed_dsn_is_reported_without_its_text() -> None:
    secret = "p4ss-" + uuid.uuid4().hex
    sink = PostgresSink(Settings(postgres_dsn=f"host=/tmp password={secret} oops"))
    with pytest.raises(PostgresConfigError, match="not a valid connection string") as info:
        sink.write("users", [envelope("users", user(1))])
    assert secret not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_settings_never_show_the_dsn() -> None:
    settings = Settings(postgres_dsn="postgresql://u:hunter2@db/x")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_the_sink_needs_a_secret_or_a_dsn() -> None:
    with pytest.raises(PostgresConfigError, match="PIPELINE_POSTGRES_SECRET_ARN"):
        PostgresSink(Settings())


def test_both_sinks_are_the_default() -> None:
    assert Settings().sink_list == ["dynamodb", "postgres"]


def test_secret_document_is_what_rds_writes() -> None:
    credentials = Credentials("db.example", 5433, "app", "pw", "moovitamix")
    assert orjson.loads(secret_document(credentials)) == {
        "engine": "postgres",
        "host": "db.example",
        "port": 5433,
        "username": "app",
        "password": "pw",
        "dbname": "moovitamix",
    }
    assert Credentials.from_secret(secret_document(credentials)) == credentials
    assert "pw" not in repr(credentials)


def test_secret_defaults_port_and_dbname() -> None:
    parsed = Credentials.from_secret('{"host": "h", "username": "u", "password": "p"}')
    assert (parsed.port, parsed.dbname) == (5432, "postgres")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"host": "h", "username": "u"}', "lacks password"),
        ('{"username": "u", "password": "p"}', "lacks host"),
        ('{"host": "h", "username": "u", "password": "p", "port": "x"}', "port"),
    ],
)
def test_malformed_secrets_are_refused_clearly(document: str, problem: str) -> None:
    with pytest.raises(PostgresConfigError, match=problem):
        Credentials.from_secret(document)


@given(password=st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40))
def test_a_malformed_secret_never_echoes_its_values(password: str) -> None:
    """The messages are fixed texts: nothing of the secret's content gets into them."""
    bad_port = {"host": "h", "username": "u", "password": password, "port": password + "x"}
    no_user = {"host": "h", "password": password}
    for document, message in (
        (bad_port, "the PostgreSQL secret's port is not a number"),
        (no_user, "the PostgreSQL secret lacks username"),
    ):
        with pytest.raises(PostgresConfigError) as info:
            Credentials.from_secret(orjson.dumps(document).decode())
        assert str(info.value) == message


def test_ensure_secret_creates_then_updates(
    aws_env: str, postgres_credentials: Credentials
) -> None:
    name = secret_name()
    first = ensure_postgres_secret(name, postgres_credentials)
    changed = Credentials(**{**postgres_credentials.__dict__, "port": 6543})
    assert ensure_postgres_secret(name, changed) == first
    stored = aws.client("secretsmanager").get_secret_value(SecretId=first)["SecretString"]
    assert Credentials.from_secret(stored) == changed
