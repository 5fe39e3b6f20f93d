"""The local cloud's process environment: the one place that sets and restores `os.environ`.

The code the cloud runs in its own process takes its endpoint and settings from the standard
variables, as it does on Lambda: the handlers run as threads (`LocalCloud(function_processes=
False)`, the tests that hook them), the deploy code (`infra.deploy`, Chalice's CLI), and the
chalicelib code the cloud uses to read a run back (`wiring`, boto3, PynamoDB). So the process
that runs them is given what the Lambda runtime gives a function (the emulator's endpoint, its
region, dummy credentials; no profile or session of this shell) and the functions' deployed
environment, and gets its own back when the cloud stops.
"""

from __future__ import annotations

import os

from chalicelib import wiring

REGION = "us-east-1"
MOTO_CREDENTIAL = "testing"
"""moto accepts any credentials; these are not a secret."""


class ProcessEnvironment:
    """Sets this process's environment for the cloud and restores what it replaced."""

    def __init__(self) -> None:
        self._saved_env: dict[str, str | None] = {}

    def _set_environment(self, environment: dict[str, str], drop: tuple[str, ...] = ()) -> None:
        for name in [*environment, *drop]:
            self._saved_env.setdefault(name, os.environ.get(name))
        for name in drop:
            os.environ.pop(name, None)
        os.environ.update(environment)
        wiring.reset()

    def apply_runtime(self, endpoint: str) -> None:
        """What the Lambda runtime gives every function (and the deploy needs): the emulator's
        endpoint, its region and dummy credentials; no profile or session of this shell."""
        self._set_environment(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": MOTO_CREDENTIAL,
                "AWS_SECRET_ACCESS_KEY": MOTO_CREDENTIAL,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            },
            drop=("AWS_PROFILE", "AWS_SESSION_TOKEN"),
        )

    @staticmethod
    def runs_with(environment: dict[str, str]) -> bool:
        """Whether this process has exactly that function environment (no other PIPELINE_)."""
        return all(
            os.environ.get(name) == value for name, value in environment.items()
        ) and not any(
            name.startswith("PIPELINE_") and name not in environment for name in os.environ
        )

    def apply_deployed(self, environment: dict[str, str]) -> None:
        """This process runs the functions: it takes their deployed environment."""
        self._set_environment(
            environment,
            drop=tuple(name for name in os.environ if name.startswith("PIPELINE_")),
        )

    def restore(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        wiring.reset()
