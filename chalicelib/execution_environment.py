"""What a function's execution environment prepares once, at init, before its first invocation.

Lambda runs the module's top level once per execution environment (its init phase) and then
reuses the environment warm; AWS's advice is to create SDK clients and database connections
there, not in the handler. Creating a boto3 client loads its service model and endpoint rules
(~0.2 s for S3 here), and the first PostgreSQL connection of a process applies the pending
migrations: done in the first invocation, both counted in its duration, and for the reconcile
function that was the time to verdict.

`prepare()` (called by `app.py` at import) creates the clients the function's role uses and,
for the roles that use PostgreSQL, opens the connection. It also runs the cyclic garbage
collector less often (`COLLECTOR_THRESHOLDS`): every function parses large responses (API pages,
stream batches, 1 MB DynamoDB pages) into many small objects, almost all freed by reference
counting, and with Python's default thresholds the collector ran every 700 allocations:
parsing a run's read-back took a fifth longer (measured: 60,000 rows of DynamoDB Query
responses through botocore's parser, 0.69 s -> 0.56 s). Cycles are still freed, in larger
batches. Outside Lambda
(`AWS_LAMBDA_FUNCTION_NAME` unset: `chalice deploy`, tests importing the app) it does nothing.
A failure here is logged and left to the first invocation, which meets it again and reports
it as that invocation's error: init never fails the environment.
"""

from __future__ import annotations

import gc
import os
from typing import Final

from chalicelib.aws import clients as aws
from chalicelib.observability.logging import logger
from chalicelib.settings import get_settings

ROLE_CLIENTS: Final[dict[str, tuple[str, ...]]] = {
    "ingest": ("dynamodb", "kinesis", "sqs", "s3", "lambda"),
    "ingest_worker": ("dynamodb", "kinesis", "sqs", "s3", "lambda"),
    "load": ("dynamodb", "s3", "lambda"),
    "reconcile": ("dynamodb", "s3", "events", "lambda"),
}
"""The AWS services each function calls (`chalicelib.wiring` builds them per role)."""
POSTGRES_ROLES: Final = frozenset({"load", "reconcile"})
COLLECTOR_THRESHOLDS: Final = (50_000, 20, 100)
"""`gc.set_threshold` in a function's process (allocations before a young collection, young
collections before a middle one, middle ones before a full one)."""


def role(function_name: str | None) -> str | None:
    """The app's name for a function (`reconcile`), from Lambda's name for it
    (`moovitamix-pipeline-prod-reconcile`, or the bare name); None for anything else."""
    if not function_name:
        return None
    for name in ROLE_CLIENTS:
        if function_name == name or function_name.endswith(f"-{name}"):
            return name
    return None


def prepare(function_name: str | None = None) -> str | None:
    """Create the function's clients and open its PostgreSQL connection; returns its role."""
    name = role(function_name or os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    if name is None:
        return None
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    try:
        for service in ROLE_CLIENTS[name]:
            aws.client(service)
        settings = get_settings()
        if name in POSTGRES_ROLES and "postgres" in settings.sink_list:
            from chalicelib.load.sinks.postgres_connection import database_for

            database_for(settings).connection()
    except Exception as error:  # the first invocation meets it again and reports it
        logger.warning(
            "init left work to the first invocation",
            extra={"step": "init", "function": name, "reason": f"{type(error).__name__}"},
        )
    return name
