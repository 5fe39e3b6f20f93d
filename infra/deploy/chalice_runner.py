"""Chalice's CLI run as a child process with the stage's PIPELINE_* settings (`deploy`,
`delete`, `package`): the decorators in app.py read them when Chalice loads the app."""

from __future__ import annotations

import os
import subprocess  # runs the chalice CLI with fixed arguments  # nosec B404
import sys
from typing import IO

from infra.chalice_cli import APP_ONLY
from infra.deploy.target import DeployError
from infra.stages import PROJECT_ROOT, Stage


def chalice_environment(stage: Stage) -> dict[str, str]:
    """This process's environment with the stage's PIPELINE_* variables, and only those."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    environment.update({k: v for k, v in stage.environment.items() if k.startswith("PIPELINE_")})
    return environment


def run_chalice(
    stage: Stage, *arguments: str, app_only: bool = False, output: IO[str] | None = None
) -> None:
    """`chalice --project-dir DIR ARGUMENTS...` with the stage's settings; output streamed
    (to `output` when given). `app_only`: the package holds the app's code without its
    dependencies (the local cloud)."""
    command = [
        sys.executable,
        "-m",
        "infra.chalice_cli",
        "--project-dir",
        str(stage.project_dir),
        *arguments,
    ]
    print(f"$ chalice {' '.join(arguments)}", flush=True)
    environment = chalice_environment(stage)
    if app_only:
        environment[APP_ONLY] = "1"
    completed = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments  # nosec B603
        command,
        env=environment,
        cwd=PROJECT_ROOT,
        check=False,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )
    if completed.returncode != 0:
        raise DeployError(f"`chalice {' '.join(arguments)}` failed (exit {completed.returncode})")
