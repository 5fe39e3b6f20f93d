"""Deploy, remove and package the whole pipeline: infrastructure, Chalice app, trigger settings.

    python -m infra.deploy deploy  --stage dev         # AWS account of the environment
    AWS_ENDPOINT_URL=http://localhost:4566 python -m infra.deploy deploy --stage localstack
    python -m infra.deploy destroy --stage dev [--yes]
    python -m infra.deploy package --stage dev [--out out]
    python -m infra.deploy status  --stage localstack [--check]
    python -m infra.deploy invoke  --stage localstack ingest

`deploy` applies `infra.provision` (create-or-update), runs `chalice deploy` with the stage's
PIPELINE_* variables (the decorators in app.py read the schedule, stream and batch settings
when Chalice loads the app), applies the trigger's failure settings Chalice cannot set, and
prints what exists. Every step compares before it writes: deploying twice changes nothing.
`status --check` reads the deployed triggers back and exits 1 when any setting differs from the
configuration (`infra.deploy.check`); `make deploy` ends with it, because a bare `chalice
deploy` recreates the Kinesis mapping without its failure settings and nothing else notices.
The endpoint is the standard AWS_ENDPOINT_URL; stages meant for an emulator refuse to run
without one, so they never reach a real account by mistake.
"""

from __future__ import annotations

from infra.deploy.commands import Packages, Report, deploy, destroy, package
from infra.deploy.invocation import invoke
from infra.deploy.target import DeployError, spec_for

__all__ = [
    "DeployError",
    "Packages",
    "Report",
    "deploy",
    "destroy",
    "invoke",
    "package",
    "spec_for",
]
