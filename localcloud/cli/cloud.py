"""The local cloud a command starts: from its options and the shell's `PIPELINE_*` settings."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from localcloud.stack import LocalCloud

CLOUD_SETTINGS = frozenset(
    {
        "PIPELINE_API_URL",  # --api-url, or the built-in API's own address
        "PIPELINE_STREAM_SHARDS",  # --shards
        "PIPELINE_POSTGRES_SECRET_ARN",  # the cloud's own PostgreSQL
        "PIPELINE_POSTGRES_DSN",
    }
)
"""Settings the local cloud decides itself, from its options and the services it starts."""


def shell_settings() -> dict[str, str]:
    """The `PIPELINE_*` variables of the shell: the local stage is deployed with them, as if
    they were in its section of `.chalice/config.json` (the functions never read the shell's),
    except `CLOUD_SETTINGS`."""
    return {
        name: value
        for name, value in os.environ.items()
        if name.startswith("PIPELINE_") and name not in CLOUD_SETTINGS
    }


def cloud_for(args: argparse.Namespace, state_dir: Path, **options: Any) -> LocalCloud:
    """A local cloud of the command's options (`_add_cloud_options`, plus `run`'s own)."""
    return LocalCloud(
        state_dir,
        api_url=args.api_url,
        records=args.records,
        seed=args.seed,
        shard_count=args.shards,
        extra_env=shell_settings(),
        function_processes=True,
        **options,
    )
