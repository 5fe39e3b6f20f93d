"""`make invoke-local` against an emulator that records functions but cannot run them.

A moto server without Docker stores a deployed function, and answers an invocation with
`FunctionError` and its own error text instead of the function's JSON. The command must show
that error and the raw answer, and fail; not crash on the JSON parse.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra.spec import StackSpec
from infra.stages import PROJECT_ROOT, Stage
from localcloud.emulators.moto_process import MotoServer
from tests.integration.test_deploy import Cloud, emulator_environment

STAGE = "localstack"


def deploy_a_function(endpoint: str, name: str) -> None:
    """What `chalice deploy` leaves on the emulator, as far as `invoke` cares: the function."""
    cloud = Cloud(endpoint)
    role = cloud.client("iam").create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "def ingest(event, context):\n    return {'status': 'ok'}\n")
    cloud.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="app.ingest",
        Code={"ZipFile": code.getvalue()},
    )


def test_invoke_on_an_emulator_that_cannot_run_lambda_shows_the_error_and_raw_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator must not find a Docker engine, whatever the machine has.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    stage = Stage.load(STAGE)
    name = StackSpec(stage.settings, stage=STAGE, app_name=stage.app_name).function_name("ingest")
    with MotoServer(tmp_path / "moto.log") as moto:
        deploy_a_function(moto.url, name)
        completed = subprocess.run(
            [sys.executable, "-m", "infra.deploy", "invoke", "--stage", STAGE, "ingest"],
            cwd=PROJECT_ROOT,
            env=emulator_environment(moto.url),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "Expecting value" not in completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["function_error"] == "Handled"
    assert answer["payload"] is None
    assert "docker" in answer["raw_payload"].lower()
    first, *explanation = completed.stderr.strip().splitlines()
    assert first.startswith("error: ingest failed (FunctionError: Handled): the answer is not JSON")
    assert answer["raw_payload"][:100] in first
    assert "cannot run them" in " ".join(explanation)
