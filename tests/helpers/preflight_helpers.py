"""A stage filled in as a user would before deploying it to AWS (passes `infra.preflight`).

The shipped `dev` stage carries placeholder subnet, security group and VPC ids and no RDS CA
bundle, so `python -m infra.deploy deploy --stage dev` refuses it. Tests that need the deploy
to get past that check (e.g. to reach a later guard) fill a copy of the project in with this.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from infra import policies, preflight
from infra.chalice_config import read_config, write_config
from tests.helpers.tls_helpers import make_authority

BUNDLE = "chalicelib/certs/rds-global-bundle.pem"
READY_NETWORK = {
    "subnet_ids": ["subnet-0a1b2c3d4e5f60718", "subnet-0a1b2c3d4e5f60719"],
    "security_group_ids": ["sg-0a1b2c3d4e5f6071a"],
}
READY_ENDPOINTS = {
    "vpc_id": "vpc-0a1b2c3d4e5f6071b",
    "route_table_ids": ["rtb-0a1b2c3d4e5f6071c"],
    "security_group_ids": ["sg-0a1b2c3d4e5f6071d"],
}


def valid_bundle() -> bytes:
    """Two CA certificates valid today (made for the test, not Amazon's)."""
    return make_authority("Amazon RDS test root").pem() + make_authority("second root").pem()


def ready_section(section: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stage's section with real-looking ids, verify-full and the bundle path."""
    ready = copy.deepcopy(section)
    for function in preflight.POSTGRES_FUNCTIONS:
        ready.setdefault("lambda_functions", {}).setdefault(function, {}).update(
            copy.deepcopy(READY_NETWORK)
        )
    ready["vpc_endpoints"] = copy.deepcopy(READY_ENDPOINTS)
    ready.setdefault("environment_variables", {}).update(
        PIPELINE_POSTGRES_SSLMODE="verify-full", PIPELINE_POSTGRES_SSLROOTCERT=BUNDLE
    )
    return ready


def make_ready(project: Path, stage: str = "dev") -> None:
    """Fill in `stage` of the project at `project` in place, write the CA bundle there and
    regenerate the project's IAM policy files (they name the new subnets and groups)."""
    config = read_config(project)
    config["stages"][stage] = ready_section(config["stages"][stage])
    write_config(config, project)
    (project / BUNDLE).parent.mkdir(parents=True, exist_ok=True)
    (project / BUNDLE).write_bytes(valid_bundle())
    policies.write_all(project)
