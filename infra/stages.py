"""One stage of `.chalice/config.json`, seen from the deploy side.

Everything a deployment needs to know about a stage comes from the Chalice config, so that
`chalice deploy`, the infrastructure, the IAM policies and the packaged templates can never
disagree: the functions' environment variables (hence the pipeline settings and every resource
name), and the per-function Lambda settings Chalice applies itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from chalicelib.settings import Settings
from infra import names
from infra.chalice_config import PROJECT_ROOT, environment_of, read_config, stage_section
from infra.names import FUNCTIONS

__all__ = ["EMULATOR_STAGES", "FUNCTIONS", "INFRA_KEY", "PROJECT_ROOT", "Stage"]

EMULATOR_STAGES = ("local", "localstack")
"""Stages whose names and policies assume an emulator (moto's or LocalStack's account)."""

INFRA_KEY = "infra"
"""The stage's deploy-side section in `.chalice/config.json` (Chalice ignores it):
`region` and `account_id` (every policy ARN names them; the deploy checks it is deploying
there) and `production` (keep the data when the stack or the stage is removed)."""

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ACCOUNT = re.compile(r"^\d{12}$")


class _StageSettings(Settings):
    """Settings built from the stage's variables only, never from this process's environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@dataclass(frozen=True)
class Stage:
    """A Chalice stage: its name, its config section and the names Chalice will give things."""

    name: str
    config: dict[str, Any]
    project_dir: Path = PROJECT_ROOT

    @classmethod
    def load(cls, name: str, project_dir: Path = PROJECT_ROOT) -> Stage:
        config = read_config(project_dir)
        stage_section(config, name)  # an unknown stage fails here, naming the known ones
        return cls(name=name, config=config, project_dir=project_dir)

    @property
    def app_name(self) -> str:
        return str(self.config["app_name"])

    @property
    def section(self) -> dict[str, Any]:
        return stage_section(self.config, self.name)

    @property
    def environment(self) -> dict[str, str]:
        """The environment variables Chalice gives the functions of this stage."""
        return environment_of(self.config, self.name)

    @cached_property
    def settings(self) -> Settings:
        """The pipeline settings the deployed functions will read."""
        prefix = "PIPELINE_"
        values = {
            name.removeprefix(prefix).lower(): value
            for name, value in self.environment.items()
            if name.startswith(prefix)
        }
        return _StageSettings.model_validate(values)

    @property
    def infra(self) -> dict[str, Any]:
        return dict(self.section.get(INFRA_KEY, {}))

    @property
    def region(self) -> str:
        """The AWS region the stage is deployed to; its policy ARNs name it."""
        region = str(self.infra.get("region", ""))
        if not _REGION.match(region):
            raise ValueError(
                f"stage {self.name}: set {INFRA_KEY}.region in .chalice/config.json to the "
                f"region it deploys to (e.g. eu-west-1), not {region!r}"
            )
        return region

    @property
    def account_id(self) -> str:
        """The AWS account the stage is deployed to; its policy ARNs name it."""
        account = str(self.infra.get("account_id", ""))
        if not _ACCOUNT.match(account):
            raise ValueError(
                f"stage {self.name}: set {INFRA_KEY}.account_id in .chalice/config.json to the "
                f"12-digit account it deploys to, not {account!r}"
            )
        return account

    @property
    def emulator(self) -> bool:
        return self.name in EMULATOR_STAGES

    @property
    def production(self) -> bool:
        """True unless the stage says `"production": false` (emulator stages never are).

        A production stage's stream, tables and quarantine bucket are kept when the stack is
        deleted (CloudFormation `DeletionPolicy: Retain`) and by `infra.deploy destroy`.
        Forgetting the flag on a new stage keeps its data rather than losing it.
        """
        if self.emulator:
            return False
        value = self.infra.get("production", True)
        if not isinstance(value, bool):
            raise ValueError(f"stage {self.name}: {INFRA_KEY}.production must be true or false")
        return value

    def function_name(self, function: str) -> str:
        """The Lambda function name Chalice deploys: `<app>-<stage>-<function>`."""
        return names.function_name(self.app_name, self.name, function)

    def function_setting(self, function: str, key: str, default: Any = None) -> Any:
        """A Chalice setting as it applies to one function, looked up in Chalice's order."""
        scopes = (
            self.section.get("lambda_functions", {}).get(function, {}),
            self.section,
            self.config.get("lambda_functions", {}).get(function, {}),
            self.config,
        )
        for scope in scopes:
            if scope.get(key) is not None:
                return scope[key]
        return default

    def rule_name(self, function: str) -> str:
        """The EventBridge rule Chalice creates for a scheduled function."""
        return names.rule_name(self.app_name, self.name, function)
