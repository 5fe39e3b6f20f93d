"""What a stage must have before it reaches AWS: TLS that verifies RDS, and the RDS VPC.

`python -m infra.deploy deploy` refuses a stage with any of these problems (the message says
what to set where); `package` prints them as warnings, since a package is also written to be
read. The emulator stages (`local`, `localstack`) are exempt: their PostgreSQL is on the same
machine or Docker network, reached over a Unix socket or a private bridge.

For a stage that writes the `postgres` sink:

- `PIPELINE_POSTGRES_SSLMODE` is `verify-full`: encrypted, and the server's certificate must
  chain to a CA of the bundle and name the host connected to;
- `PIPELINE_POSTGRES_SSLROOTCERT` names a PEM bundle inside `chalicelib/` (Chalice ships
  that folder whole, so the bundle is in the package), which exists and holds at least one
  CA certificate valid today. The RDS bundle cannot be fetched by this code's tests (no
  network), so the deploy refuses rather than ship a function that can never connect;
- every function that connects to PostgreSQL (`load`, `reconcile`) has `subnet_ids` and
  `security_group_ids`, none of them a placeholder: RDS lives in private subnets;
- a `vpc_endpoints` section, if any, has no placeholder either.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

from cryptography import x509

from infra.stages import Stage

POSTGRES_FUNCTIONS = ("load", "reconcile")
"""The functions that open PostgreSQL connections (the load writes, the reconcile counts)."""
PLACEHOLDER = re.compile(r"^(vpc|subnet|sg|rtb)-0{16}[0-9a-f]$|REPLACE")
"""The ids `.chalice/config.json` ships for `dev` (`subnet-0000000000000000a`, ...): shaped
like real ids, so the packaged templates pass cfn-lint, and refused by the deploy."""
BUNDLE_FOLDER = "chalicelib"
RDS_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
"""Amazon's bundle of every RDS CA, all regions (regional bundles sit beside it)."""


class PreflightError(ValueError):
    """The stage is not fit for AWS; the message lists every problem."""


def problems(stage: Stage, today: datetime.datetime | None = None) -> list[str]:
    """Every reason the stage must not be deployed to AWS; empty when there is none."""
    if "postgres" not in stage.settings.sink_list:
        return []
    return [*_tls_problems(stage, today), *_vpc_problems(stage)]


def check(stage: Stage) -> None:
    found = problems(stage)
    if found:
        raise PreflightError(
            f"stage {stage.name} is not ready for AWS:\n  - "
            + "\n  - ".join(found)
            + "\n(see docs/deploy.md, 'PostgreSQL: TLS and the VPC')"
        )


def _tls_problems(stage: Stage, today: datetime.datetime | None) -> list[str]:
    settings = stage.settings
    if settings.postgres_sslmode != "verify-full":
        return [
            f"PIPELINE_POSTGRES_SSLMODE is {settings.postgres_sslmode}: a stage on AWS must "
            "verify the RDS server (set verify-full and PIPELINE_POSTGRES_SSLROOTCERT)"
        ]
    bundle_setting = settings.postgres_sslrootcert
    fetch = f"curl -fsSL {RDS_BUNDLE_URL} -o {BUNDLE_FOLDER}/certs/rds-global-bundle.pem"
    if not bundle_setting:
        return [
            "PIPELINE_POSTGRES_SSLROOTCERT is not set: verify-full needs the RDS CA bundle "
            f"in the package ({fetch}, then set it to that path)"
        ]
    relative = Path(bundle_setting)
    if relative.is_absolute() or not relative.parts or relative.parts[0] != BUNDLE_FOLDER:
        return [
            f"PIPELINE_POSTGRES_SSLROOTCERT is {bundle_setting}: give a path inside "
            f"{BUNDLE_FOLDER}/ (relative to the project), the folder Chalice packages"
        ]
    bundle = stage.project_dir / relative
    if not bundle.is_file():
        return [f"the RDS CA bundle {bundle_setting} is missing: {fetch}"]
    try:
        certificates = x509.load_pem_x509_certificates(bundle.read_bytes())
    except ValueError:
        return [f"{bundle_setting} is not a PEM bundle of certificates: {fetch}"]
    now = today or datetime.datetime.now(datetime.UTC)
    valid = [
        certificate
        for certificate in certificates
        if certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc
    ]
    if not valid:
        return [f"no certificate of {bundle_setting} is valid today: fetch it again ({fetch})"]
    return []


def _vpc_problems(stage: Stage) -> list[str]:
    found: list[str] = []
    for function in POSTGRES_FUNCTIONS:
        subnets = list(stage.function_setting(function, "subnet_ids", []) or [])
        groups = list(stage.function_setting(function, "security_group_ids", []) or [])
        if not subnets or not groups:
            found.append(
                f"function {function} connects to PostgreSQL but has no "
                f"{'subnet_ids' if not subnets else 'security_group_ids'}: RDS is reachable "
                f"only inside its VPC; set lambda_functions.{function}.subnet_ids (private "
                "subnets that route to RDS) and security_group_ids (a group RDS admits on "
                "5432) in .chalice/config.json"
            )
            continue
        placeholders = [value for value in [*subnets, *groups] if PLACEHOLDER.search(value)]
        if placeholders:
            found.append(
                f"function {function}: replace the placeholders {', '.join(placeholders)} "
                "in .chalice/config.json with your VPC's subnet and security group ids"
            )
    endpoints = stage.section.get("vpc_endpoints") or {}
    values = [endpoints.get("vpc_id") or ""]
    values += [*endpoints.get("route_table_ids", []), *endpoints.get("security_group_ids", [])]
    placeholders = [value for value in values if PLACEHOLDER.search(str(value))]
    if placeholders:
        found.append(
            f"vpc_endpoints: replace the placeholders {', '.join(placeholders)} (or remove "
            "the section when the subnets reach AWS through a NAT gateway)"
        )
    return found
