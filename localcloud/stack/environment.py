"""The functions' environment, and the one place the local cloud sets `os.environ`.

What the cloud starts gets its environment explicitly: a function process gets
`function_environment` (the deployed environment, as `GetFunctionConfiguration` returns it,
plus what the Lambda runtime adds: the emulator's endpoint, its region, dummy credentials).

One round trip of this process's own `os.environ` remains, in `ProcessEnvironment`: the code
the cloud runs in its own process takes its endpoint and settings from the standard variables,
as it does on Lambda, and has no other way in. That is the handlers run as threads
(`LocalCloud(function_processes=False)`, the tests that hook them), the deploy code
(`infra.deploy` and Chalice's CLI, which deploy wherever `AWS_ENDPOINT_URL` points) and the
chalicelib code the cloud reads a run back with (`wiring`, boto3, PynamoDB, pydantic-settings).
So while the cloud is up this process has the same environment as a function, and gets its own
back when the cloud stops.
"""

from __future__ import annotations

import os

from chalicelib import wiring

REGION = "us-east-1"
MOTO_CREDENTIAL = "testing"
"""moto accepts any credentials; these are not a secret."""


DROPPED = ("AWS_PROFILE", "AWS_SESSION_TOKEN")
"""Of this shell's variables, what a function must not see: its profile and session."""


def runtime_environment(endpoint: str) -> dict[str, str]:
    """What the Lambda runtime gives every function (and the deploy needs): the emulator's
    endpoint, its region and dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": MOTO_CREDENTIAL,
        "AWS_SECRET_ACCESS_KEY": MOTO_CREDENTIAL,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


def function_environment(endpoint: str, deployed: dict[str, str]) -> dict[str, str]:
    """A function process's environment: the interpreter's own (path, locale, home) without
    this shell's AWS session or PIPELINE_ settings, then the runtime's and the deployed
    variables."""
    runtime = runtime_environment(endpoint)
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PIPELINE_") and name not in runtime and name not in DROPPED
    }
    return {**inherited, **runtime, **deployed}


class ProcessEnvironment:
    """This process's environment while the cloud is up (the module's docstring says why);
    `restore` gives the process back what it replaced."""

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
        """The Lambda runtime's variables (`runtime_environment`); no profile or session of
        this shell."""
        self._set_environment(runtime_environment(endpoint), drop=DROPPED)

    @staticmethod
    def runs_with(environment: dict[str, str]) -> bool:
        """Whether this process has exactly that function environment (no other PIPELINE_)."""
        return all(
            os.environ.get(name) == value for name, value in environment.items()
        ) and not any(
            name.startswith("PIPELINE_") and name not in environment for name in os.environ
        )

    def apply_deployed(self, environment: dict[str, str]) -> None:
        """This process runs the functions' code: it takes their deployed environment."""
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
