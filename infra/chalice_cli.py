"""`python -m infra.chalice_cli ARGS`: Chalice's own CLI, with one packaging bug worked around.

Chalice 1.34's Terraform generator names its log-group handler `_generate_log_group`, but
dispatches to `_generate_loggroup`, so `chalice package --pkg-format terraform` fails with
`UnsupportedFeatureError: LogGroup(...)` for any stage with `log_retention_in_days`. Aliasing
the handler makes it emit the `aws_cloudwatch_log_group` (the Lambda generator writes it);
`infra.cloudformation.add_to_terraform` then corrects that group's name, which Chalice also
gets wrong. Everything else is Chalice unchanged.

With `INFRA_CHALICE_APP_ONLY=1` (set by `infra.deploy.deploy(..., app_only=True)`, which the
local cloud uses) the deployment package holds the app's own code only, without building the
dependencies: the local cloud runs the functions from the work tree, so only what Chalice
creates around the package matters there, and no wheel has to be downloaded.
"""

from __future__ import annotations

import os
import sys

from chalice.cli import main as chalice_main
from chalice.deploy import deployer
from chalice.deploy.packager import AppOnlyDeploymentPackager
from chalice.package import TerraformGenerator

APP_ONLY = "INFRA_CHALICE_APP_ONLY"


def main() -> int:
    if not hasattr(TerraformGenerator, "_generate_loggroup"):
        TerraformGenerator._generate_loggroup = TerraformGenerator._generate_log_group  # type: ignore[attr-defined]
    if os.environ.get(APP_ONLY) == "1":
        deployer.LambdaDeploymentPackager = AppOnlyDeploymentPackager  # type: ignore[misc,assignment]
    return int(chalice_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
