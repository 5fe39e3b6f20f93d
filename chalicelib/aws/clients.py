"""boto3 clients, one per service per process, with the standard retry mode.

The standard retry mode retries throttling (ProvisionedThroughputExceeded, Throttling) and
transient errors with backoff, so callers only handle what is left after it. Endpoints come
from the standard `AWS_ENDPOINT_URL` variable that boto3 reads itself.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 10},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=16,
    # DynamoDB and Kinesis validate every request themselves; botocore's client-side copy of
    # that check was ~15 % of the load function's CPU (profiled with bench/, docs/performance.md)
    parameter_validation=False,
)


@cache
def client(service: str) -> Any:
    """A cached client; `client.cache_clear()` forgets them (tests switch endpoints)."""
    return boto3.session.Session().client(service, config=_CONFIG)  # type: ignore[call-overload]
