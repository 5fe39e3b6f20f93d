"""`python -m infra.chalice_cli ARGS`: Chalice's own CLI, with one packaging bug worked around.

Chalice 1.34's Terraform generator names its log-group handler `_generate_log_group`, but
dispatches to `_generate_loggroup`, so `chalice package --pkg-format terraform` fails with
`UnsupportedFeatureError: LogGroup(...)` for any stage with `log_retention_in_days`. Aliasing
the handler makes it emit the `aws_cloudwatch_log_group` (the Lambda generator writes it);
`infra.cloudformation.add_to_terraform` then corrects that group's name, which Chalice also
gets wrong. Everything else is Chalice unchanged.
"""

from __future__ import annotations

import sys

from chalice.cli import main as chalice_main
from chalice.package import TerraformGenerator


def main() -> int:
    if not hasattr(TerraformGenerator, "_generate_loggroup"):
        TerraformGenerator._generate_loggroup = TerraformGenerator._generate_log_group  # type: ignore[attr-defined]
    return int(chalice_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
