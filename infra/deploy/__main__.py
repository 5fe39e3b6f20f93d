"""`python -m infra.deploy`: see `infra/deploy/cli.py`."""

from __future__ import annotations

import sys

from infra.deploy.cli import main

if __name__ == "__main__":
    sys.exit(main())
