"""The LocalStack setup's PostgreSQL part: compose services, the secret hook, the stage."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import yaml

from chalicelib.load.sinks.postgres_connection import Credentials
from infra.chalice_config import stage_environment

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "localstack" / "init" / "ready.d" / "10-postgres-secret.sh"


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.localstack.yml").read_text())
    return document


def test_images_are_pinned() -> None:
    services = compose()["services"]
    assert services["localstack"]["image"] == "localstack/localstack:4.14.0"
    assert services["postgres"]["image"] == "postgres:18"


def test_postgres_is_healthy_before_localstack_starts() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["localstack"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_no_password_is_written_in_the_file() -> None:
    services = compose()["services"]
    for service, variable in (
        ("postgres", "POSTGRES_PASSWORD"),
        ("localstack", "MOOVITAMIX_PG_PASSWORD"),
    ):
        assert services[service]["environment"][variable].startswith("${MOOVITAMIX_PG_PASSWORD:?")


def test_lambdas_share_the_network_of_postgres() -> None:
    document = compose()
    network = document["networks"]["moovitamix"]["name"]
    assert document["services"]["localstack"]["environment"]["LAMBDA_DOCKER_NETWORK"] == network
    assert "moovitamix" in document["services"]["postgres"]["networks"]


def test_the_stage_reads_the_secret_the_hook_writes() -> None:
    environment = stage_environment("localstack")
    assert "postgres" in environment["PIPELINE_SINKS"].split(",")
    assert f"name={environment['PIPELINE_POSTGRES_SECRET_ARN']}\n" in HOOK.read_text()
    mounted = compose()["services"]["localstack"]["volumes"]
    assert "./localstack/init/ready.d:/etc/localstack/init/ready.d:ro" in mounted


def test_the_hook_stores_rds_shaped_credentials_off_the_command_line(tmp_path: Path) -> None:
    """Runs the hook with a stand-in `awslocal` that records its arguments and the document."""
    log = tmp_path / "calls.jsonl"
    stub = tmp_path / "awslocal"
    stub.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "value = args[args.index('--secret-string') + 1]\n"
        "document = open(value[len('file://'):]).read() if value.startswith('file://') else None\n"
        "call = {'args': args, 'document': document}\n"
        f"open({str(log)!r}, 'a').write(json.dumps(call) + '\\n')\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    password = 's3cret "quoted" $(not run)'
    environment = {
        **os.environ,
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "MOOVITAMIX_PG_HOST": "postgres",
        "MOOVITAMIX_PG_USER": "moovitamix",
        "MOOVITAMIX_PG_DB": "moovitamix",
        "MOOVITAMIX_PG_PASSWORD": password,
    }
    result = subprocess.run(
        ["bash", str(HOOK)], env=environment, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    (call,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert call["args"][:4] == [
        "secretsmanager",
        "create-secret",
        "--name",
        "moovitamix-localstack/postgres",
    ]
    assert password not in " ".join(call["args"])
    assert Credentials.from_secret(call["document"]) == Credentials(
        "postgres", 5432, "moovitamix", password, "moovitamix"
    )
    assert json.loads(call["document"])["engine"] == "postgres"
