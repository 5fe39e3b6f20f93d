"""`.chalice/config.json`, read (and, for a derived project, written) here and nowhere else.

The Chalice config is the deploy's single source of truth: its stages' environment variables
are the pipeline settings (hence every resource name, `infra.names`), its per-function
settings are what Chalice applies, its `infra` sections pin account and region. The deploy,
the policies, the monitoring definitions, the local cloud and the tests read it through these
functions, so its layout (where a stage's variables are, how the global ones merge into a
stage's) is known in one place. `infra.stages.Stage` is the typed view of one stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The work tree: the Chalice project whose config the deploy reads by default."""

CONFIG_FILE = Path(".chalice") / "config.json"


def config_path(project_dir: Path = PROJECT_ROOT) -> Path:
    return project_dir / CONFIG_FILE


def read_config(project_dir: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The whole config of the Chalice project in `project_dir`."""
    config: dict[str, Any] = json.loads(config_path(project_dir).read_text())
    return config


def write_config(config: dict[str, Any], project_dir: Path) -> Path:
    """Write `config` as the Chalice config of `project_dir` (a derived project: the local
    cloud's, a test's copy); never the work tree's by default."""
    path = config_path(project_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def app_name(project_dir: Path = PROJECT_ROOT) -> str:
    """The `app_name` Chalice prefixes every function name with."""
    return str(read_config(project_dir)["app_name"])


def stage_names(config: dict[str, Any]) -> list[str]:
    return list(config.get("stages", {}))


def stage_section(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """One stage's section; a clear error naming the known stages when it has none."""
    stages = config.get("stages", {})
    if stage not in stages:
        known = ", ".join(sorted(stages))
        raise ValueError(f"unknown stage {stage!r} in {CONFIG_FILE} (known: {known})")
    return dict(stages[stage])


def environment_of(config: dict[str, Any], stage: str) -> dict[str, str]:
    """The environment variables Chalice gives the functions of `stage`: the global ones,
    overridden by the stage's (per-function variables are not used by this project)."""
    variables = dict(config.get("environment_variables", {}))
    variables.update(stage_section(config, stage).get("environment_variables", {}))
    return {name: str(value) for name, value in variables.items()}


def stage_environment(stage: str = "local", project_dir: Path = PROJECT_ROOT) -> dict[str, str]:
    """The environment variables a stage of the work tree's config gives the functions."""
    return environment_of(read_config(project_dir), stage)
