"""Every name a stage's resources get, derived here and nowhere else.

Function names, schedule rules, log groups, queues, the secret, the alarm topic, alarms, the
dashboard, the policy files and the Terraform stack all follow from three inputs: the Chalice
`app_name`, the stage's name and the stage's settings (`PIPELINE_*`: table prefix, stream,
work queue, bucket). `infra.spec.StackSpec`, `infra.stages.Stage`, `infra.stage.StageResources`,
the local cloud and the tests ask these functions, so a formula is written once.

The names the functions themselves compute at run time (tables, the on-failure queue) come
from `chalicelib.settings.Settings`/`chalicelib.deadletter.failures`, which the Lambda code must own
(it never imports `infra/`): the functions here call them rather than repeat them, so what is
deployed and what the code looks up cannot drift apart.
"""

from __future__ import annotations

from typing import Final

from chalicelib.deadletter.failures import failure_queue_name
from chalicelib.settings import Settings

APP_NAME: Final = "moovitamix-pipeline"
"""`app_name` of `.chalice/config.json` and `app.py`; Chalice prefixes function names with it
(`infra.chalice_config.app_name` reads the config's, this is the default)."""

FUNCTIONS: Final = ("ingest", "load", "reconcile", "ingest_worker")
"""The Lambda functions of `app.py`, by their Chalice names."""
WORKER_FUNCTION: Final = "ingest_worker"
"""The function the fan-out's work queue triggers."""


def chalice_name(app_name: str, stage: str, resource: str) -> str:
    """What Chalice names a deployed resource of a stage: `<app>-<stage>-<resource>`."""
    return f"{app_name}-{stage}-{resource}"


def function_name(app_name: str, stage: str, function: str) -> str:
    """The Lambda function name Chalice deploys: `<app>-<stage>-<function>`."""
    return chalice_name(app_name, stage, function)


def log_group(lambda_name: str) -> str:
    """The log group Lambda writes a function's logs to."""
    return f"/aws/lambda/{lambda_name}"


def rule_name(app_name: str, stage: str, function: str) -> str:
    """The EventBridge rule `chalice deploy` creates for a scheduled function (Chalice's
    resource name of the rule is `<function>-event`)."""
    return chalice_name(app_name, stage, f"{function}-event")


def failure_queue(settings: Settings) -> str:
    """The load trigger's on-failure destination: `<table prefix>-load-failures`."""
    return failure_queue_name(settings)


def work_queue(settings: Settings) -> str:
    """The fan-out work queue (`PIPELINE_WORK_QUEUE`), the `ingest_worker` trigger."""
    return settings.work_queue


def dead_letter_queue(queue: str) -> str:
    """Where a queue's message goes after too many receives: `<queue>-dlq`."""
    return f"{queue}-dlq"


def postgres_secret(prefix: str) -> str:
    """The Secrets Manager secret holding the PostgreSQL credentials: `<prefix>/postgres`."""
    return f"{prefix}/postgres"


def event_capture(prefix: str) -> str:
    """The local cloud's rule and queue that capture the pipeline's DatasetUpdated events:
    `<prefix>-dataset-events`."""
    return f"{prefix}-dataset-events"


def alarm_topic(prefix: str) -> str:
    """The SNS topic every alarm notifies: `<prefix>-alarms`."""
    return f"{prefix}-alarms"


def alarm_name(prefix: str, slug: str) -> str:
    """A CloudWatch alarm of the stage: `<prefix>-<slug>`."""
    return f"{prefix}-{slug}"


def alarm_slug(prefix: str, name: str) -> str:
    """The inverse of `alarm_name`."""
    return name.removeprefix(f"{prefix}-")


def dashboard(prefix: str) -> str:
    """The stage's CloudWatch dashboard: `<prefix>-pipeline`."""
    return f"{prefix}-pipeline"


def infra_stack(prefix: str) -> str:
    """The CloudFormation stack of the packaged infrastructure (Terraform): `<prefix>-infra`."""
    return f"{prefix}-infra"


def stage_policy_file(stage: str) -> str:
    """The stage's fallback IAM policy file under `.chalice/`."""
    return f"policy-{stage}.json"


def function_policy_file(stage: str, function: str) -> str:
    """One function's IAM policy file under `.chalice/`."""
    return f"policy-{stage}-{function}.json"
