"""End to end: the local cloud stores in PostgreSQL exactly what the API served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from chalicelib.aws import clients as aws
from chalicelib.model.contract import ENTITIES, entity_key
from localcloud.emulators.postgres import EmbeddedPostgres
from localcloud.fakeapi import iter_items
from localcloud.stack import LocalCloud

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 250
SEED = 7

pytestmark = pytest.mark.e2e


def served(entity: str) -> list[dict[str, object]]:
    return sorted(iter_items(entity, RECORDS, SEED), key=lambda item: entity_key(entity, item))


def test_run_json_and_dump_match_the_api_field_by_field(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "localcloud",
            "run",
            "--json",
            "--records",
            str(RECORDS),
            "--seed",
            str(SEED),
            "--dump",
            str(dump),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    summary = orjson.loads(result.stdout)
    assert summary["status"] == "succeeded"
    for entity in ENTITIES:
        counts = summary["entities"][entity]
        assert counts["fetched"] == RECORDS
        assert counts["written"] == {"dynamodb": RECORDS, "postgres": RECORDS}
        assert counts["stored"] == {"dynamodb": RECORDS, "postgres": RECORDS}
        postgres_dump = (dump / "postgres" / f"{entity}.jsonl").read_bytes()
        assert postgres_dump == (dump / "dynamodb" / f"{entity}.jsonl").read_bytes()
        rows = [orjson.loads(line) for line in postgres_dump.splitlines()]
        assert rows == served(entity)  # every field, every character, items in served order
    event = summary["event"]
    assert (event["source"], event["detail-type"]) == ("moovitamix.pipeline", "DatasetUpdated")
    assert event["detail"]["run_id"] == summary["run_id"]
    for entity, counts in summary["entities"].items():  # what the reconcile function sent
        detail = event["detail"]["entities"][entity]
        for name in ("fetched", "published", "unchanged", "quarantined", "written"):
            assert detail[name] == counts[name], (entity, name)
        assert detail["stored"] == min(counts["stored"].values())  # in every sink
        assert detail["missing"] == 0


def test_the_pipeline_reads_postgres_credentials_from_the_secret(
    tmp_path: Path, postgres_server: EmbeddedPostgres
) -> None:
    with LocalCloud(tmp_path / "state", records=40, seed=3, postgres=postgres_server) as cloud:
        # the functions' deployed environment names the stage's secret, as on AWS
        secret = os.environ["PIPELINE_POSTGRES_SECRET_ARN"]
        assert secret == f"{cloud.settings.table_prefix}/postgres"
        stored = json.loads(
            aws.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"]
        )
        assert stored["dbname"] == cloud.postgres_database
        assert "PIPELINE_POSTGRES_DSN" not in os.environ
        database = cloud.postgres_database
        report = cloud.run()
        assert report.status == "succeeded", report.errors
        for entity in ENTITIES:
            assert cloud.stored_items("postgres", entity) == cloud.stored_items("dynamodb", entity)
            assert report.entities[entity]["stored"]["postgres"] == 40
        assert report.event is not None
        for entity, counts in report.entities.items():
            detail = report.event["detail"]["entities"][entity]
            assert (detail["fetched"], detail["written"]) == (counts["fetched"], counts["written"])
    assert "PIPELINE_POSTGRES_SECRET_ARN" not in os.environ
    with postgres_server.admin_connect() as admin:  # the cloud's database is gone with it
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        assert exists.fetchone() is None


def test_without_the_postgres_sink_no_server_starts(tmp_path: Path) -> None:
    with LocalCloud(
        tmp_path / "state", records=5, extra_env={"PIPELINE_SINKS": "dynamodb"}
    ) as cloud:
        assert cloud.postgres is None
        assert "PIPELINE_POSTGRES_SECRET_ARN" not in os.environ
        report = cloud.run()
    assert report.status == "succeeded", report.errors
    assert set(report.entities["users"]["stored"]) == {"dynamodb"}
