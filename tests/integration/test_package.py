"""The deployment package is what runs: built by `chalice package`, run with nothing else.

`chalice package` builds `deployment.zip` (app.py, chalicelib/ with its migration SQL, and the
manylinux wheels of requirements.txt, downloaded from PyPI once and cached in
`.chalice/deployments/`: hence the `package` marker). The zip's contents go into a fresh
virtual environment, as Lambda puts them in `/var/task`; its interpreter runs in isolated mode
(`-I`) from an empty folder, so neither this checkout nor the test environment's packages are
importable. A small runtime script (below) imports `app` from the package and invokes one
handler with an event, the way Lambda's bootstrap does: one scheduled ingestion, then one
load batch read from the stream, against the session's moto server, the fake MooVitamix API
and the embedded PostgreSQL.

The Lambda runtime itself provides an AWS SDK (in `/var/runtime`, after `/var/task` on the
path). When the package ships boto3 it must be the one that runs; when it does not, the test
adds boto3 and s3transfer from this environment (copied, no download) after the package, as
the runtime would, and the package's own botocore still wins, exactly as on Lambda.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.settings import Settings
from infra import locks
from infra.deploy.chalice_runner import run_chalice
from infra.postgres_secret import ensure_postgres_secret
from infra.provision import provision
from infra.stages import PROJECT_ROOT, Stage
from localcloud.fakeapi import FakeApiServer
from localcloud.triggers.lambda_runtime import kinesis_event, scheduled_event
from tests.helpers.postgres_helpers import connect
from tests.integration.test_deploy import copy_project

pytestmark = pytest.mark.package

REGION = "us-east-1"
RECORDS = 40

RUNTIME = '''
"""Invoke one handler of the package the way Lambda's bootstrap does; print its answer."""
import json, sys, time, uuid

class Context:
    def __init__(self, name, timeout_s):
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + name
        self.log_group_name = "/aws/lambda/" + name
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

handler, function_name, event_file, answer_file = sys.argv[1:5]
import app
answer = getattr(app, handler)(json.load(open(event_file)), Context(function_name, 900))
modules = {
    name: getattr(module, "__file__", None) or ""
    for name, module in list(sys.modules.items())
    if name.split(".")[0] in ("app", "chalicelib", "boto3", "botocore", "psycopg", "pydantic")
}
json.dump({"answer": answer, "sys_path": sys.path, "modules": modules}, open(answer_file, "w"))
'''


@dataclass
class Package:
    zip_path: Path
    python: Path
    task: Path
    runtime: Path
    names: list[str]


def site_packages(environment: Path) -> Path:
    (path,) = (environment / "lib").glob("python3*/site-packages")
    return path


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """`chalice package` of the local stage, installed alone into a fresh virtual environment."""
    root = tmp_path_factory.mktemp("package")
    project = copy_project(root / "project")
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", REGION)  # chalice package wants one; it calls no AWS
        run_chalice(Stage.load("local", project), "package", "--stage", "local", str(out))
    zip_path = out / "deployment.zip"
    environment = root / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False, clear=True).create(environment)
    task = root / "task"  # what Lambda calls /var/task
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        archive.extractall(task)
    runtime = root / "runtime"  # what Lambda calls /var/runtime: the runtime's own SDK
    runtime.mkdir()
    for module in ("boto3", "s3transfer"):
        if not (task / module).is_dir():
            spec = importlib.util.find_spec(module)
            assert spec is not None
            assert spec.origin is not None
            shutil.copytree(Path(spec.origin).parent, runtime / module)
    (site_packages(environment) / "lambda.pth").write_text(f"{task}\n{runtime}\n")
    return Package(zip_path, environment / "bin" / "python", task, runtime, names)


def test_the_zip_holds_the_code_its_migrations_and_linux_wheels(package: Package) -> None:
    names = set(package.names)
    assert {"app.py", "chalicelib/__init__.py", "chalicelib/handlers.py"} <= names
    migrations = sorted(
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in (PROJECT_ROOT / "chalicelib" / "migrations").glob("*.sql")
    )
    assert migrations
    assert set(migrations) <= names
    compiled = [name for name in names if name.endswith(".so") or ".so." in name]
    assert any(name.startswith("pydantic_core/") for name in compiled)
    assert any(name.startswith("psycopg_binary") for name in compiled)
    assert not [name for name in compiled if "darwin" in name or name.endswith(".pyd")]
    assert not [name for name in names if name.startswith(("tests/", "localcloud/", "infra/"))]


def test_the_zip_ships_one_consistent_aws_sdk_at_the_locked_versions(package: Package) -> None:
    """boto3, botocore and s3transfer all in the zip, at the lock's versions, and boto3's own
    requirements met by the other two: never our botocore under the runtime's boto3."""
    locked = locks.locked_pins(PROJECT_ROOT / "requirements.txt")
    shipped: dict[str, str] = {}
    for name in package.names:
        folder, _, file = name.partition("/")
        if file == "METADATA" and folder.endswith(".dist-info"):
            distribution, version = folder.removesuffix(".dist-info").rsplit("-", 1)
            shipped[canonicalize_name(distribution)] = version
    sdk = ("boto3", "botocore", "s3transfer")
    assert {name: shipped.get(name) for name in sdk} == {name: locked[name].version for name in sdk}
    for module in sdk:
        assert (package.task / module / "__init__.py").is_file()
    (metadata,) = (package.task).glob("boto3-*.dist-info/METADATA")
    for line in metadata.read_text().splitlines():
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.removeprefix("Requires-Dist:").strip())
            if requirement.marker is None or requirement.marker.evaluate():
                version = shipped.get(canonicalize_name(requirement.name))
                assert version is not None, requirement
                assert requirement.specifier.contains(version), (requirement, version)


@dataclass
class Invocation:
    answer: Any
    sys_path: list[str]
    modules: dict[str, str]


def invoke(
    package: Package,
    tmp_path: Path,
    environment: dict[str, str],
    handler: str,
    function_name: str,
    event: dict[str, Any],
) -> Invocation:
    """One invocation of `app.<handler>` in the package's environment, from an empty folder."""
    work = tmp_path / f"invoke-{handler}-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    (work / "runtime.py").write_text(RUNTIME)
    (work / "event.json").write_text(json.dumps(event))
    completed = subprocess.run(
        [
            *(str(package.python), "-I", "runtime.py"),
            *(handler, function_name, "event.json", "answer.json"),
        ],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((work / "answer.json").read_text())
    return Invocation(result["answer"], result["sys_path"], result["modules"])


def function_environment(
    settings: Settings, api_url: str, endpoint: str, secret_arn: str
) -> dict[str, str]:
    """What Lambda gives the function: the stage's variables, and nothing of this process."""
    variables = dict(Stage.load("local").environment)
    variables.update(
        PIPELINE_API_URL=api_url,
        PIPELINE_STREAM_NAME=settings.stream_name,
        PIPELINE_TABLE_PREFIX=settings.table_prefix,
        PIPELINE_QUARANTINE_BUCKET=settings.quarantine_bucket,
        PIPELINE_WORK_QUEUE=settings.work_queue,
        PIPELINE_POSTGRES_SECRET_ARN=secret_arn,
    )
    return {
        **variables,
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


def test_the_package_alone_runs_an_ingestion_and_a_load_batch(
    package: Package, aws_env: str, postgres_credentials: Credentials, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        table_prefix=prefix,
        stream_name=f"{prefix}-events",
        quarantine_bucket=f"{prefix}-quarantine",
        work_queue=f"{prefix}-ingest-work",
    )
    provisioned = provision(settings, shard_count=1, stage="local")
    secret_arn = ensure_postgres_secret(f"{prefix}/postgres", postgres_credentials)
    with FakeApiServer(records=RECORDS, seed=11) as api:
        environment = function_environment(settings, api.url, aws_env, secret_arn)
        ingest = invoke(
            package,
            tmp_path,
            environment,
            "ingest",
            "moovitamix-pipeline-local-ingest",
            scheduled_event(
                f"arn:aws:events:{REGION}:123456789012:rule/moovitamix-pipeline-local-ingest",
                REGION,
            ),
        )
    # nothing came from this checkout or the test environment: only the package (and the
    # runtime's SDK, after it)
    project = str(PROJECT_ROOT)
    assert not [path for path in ingest.sys_path if path.startswith(project)]
    assert not [path for path in ingest.sys_path if path.startswith(sys.prefix)]
    for name, path in ingest.modules.items():
        if name.split(".")[0] in ("app", "chalicelib", "botocore", "psycopg", "pydantic"):
            assert path.startswith(str(package.task)), (name, path)
    if (package.task / "boto3").is_dir():
        assert ingest.modules["boto3"].startswith(str(package.task))
    assert ingest.answer["status"] == "published", ingest.answer
    counts = ingest.answer["resources"]
    assert {name: counts[name]["error"] for name in counts} == dict.fromkeys(counts)
    published = sum(resource["published"] for resource in counts.values())
    assert published == sum(resource["fetched"] for resource in counts.values()) > 0

    kinesis = boto3.client("kinesis")
    (shard,) = kinesis.list_shards(StreamName=settings.stream_name)["Shards"]
    iterator = kinesis.get_shard_iterator(
        StreamName=settings.stream_name,
        ShardId=shard["ShardId"],
        ShardIteratorType="TRIM_HORIZON",
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator, Limit=settings.batch_size)["Records"]
    assert records
    load = invoke(
        package,
        tmp_path,
        environment,
        "load",
        "moovitamix-pipeline-local-load",
        kinesis_event(
            records, shard_id=shard["ShardId"], stream_arn=provisioned.stream_arn, region=REGION
        ),
    )
    assert load.answer == {"batchItemFailures": []}
    dynamodb = boto3.client("dynamodb")
    stored = sum(
        dynamodb.scan(TableName=settings.table_name(entity), Select="COUNT")["Count"]
        for entity in ("users", "tracks", "listen_history")
    )
    assert stored == len(records)
    # the migrations shipped in the zip created the schema the load wrote into
    with connect(postgres_credentials) as connection:
        rows = sum(
            connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("users", "tracks", "listen_history")
        )
    assert rows == len(records)
    assert os.environ["AWS_ENDPOINT_URL"] == aws_env
