"""Create-or-update what Chalice does not create, against any AWS endpoint.

This module is the one definition of the pipeline's own infrastructure: `BUILDERS` turn a
`StackSpec` into declarative resources (`infra.resources`). The same list is applied by boto3
here (real AWS, LocalStack and the local cloud's moto server: boto3 picks the endpoint from
`AWS_ENDPOINT_URL`) and rendered as CloudFormation by `infra.cloudformation`. Every step checks
what exists first, so re-running it changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chalicelib.load.evidence import RUN_ROWS_INDEX
from chalicelib.settings import Settings
from infra.network import vpc_endpoint_resources
from infra.resources import (
    ApplyContext,
    Attr,
    Change,
    DynamoTable,
    KinesisStream,
    PrivateBucket,
    Queue,
    Resource,
    Secret,
    TableIndex,
    Topic,
)
from infra.spec import StackSpec
from infra.stages import EMULATOR_STAGES

TABLE_KEYS: dict[str, list[tuple[str, str, str]]] = {
    # table suffix -> [(attribute, type, key role)]
    "users": [("id", "N", "HASH")],
    "tracks": [("id", "N", "HASH")],
    "listen_history": [("user_id", "N", "HASH"), ("created_at", "S", "RANGE")],
    "runs": [("run_id", "S", "HASH")],
    # the ingest's per-page ledger of published keys (reconciliation, resumable ingestion)
    "run-pages": [("run_id", "S", "HASH"), ("page_id", "S", "RANGE")],
}

# the rows each run wrote, page by page: the reconciliation reads them back in bulk
# (chalicelib/load/evidence.py, `DynamoDBSink.run_rows`)
TABLE_INDEXES: dict[str, list[TableIndex]] = {
    suffix: [
        TableIndex(
            RUN_ROWS_INDEX,
            (("run_id", "S", "HASH"), ("run_page", "N", "RANGE")),
            projected=("updated_at",),
        )
    ]
    for suffix in ("users", "tracks", "listen_history")
}

STREAM = "EventStream"
QUARANTINE_BUCKET = "QuarantineBucket"
FAILURE_QUEUE = "LoadFailureQueue"
WORK_DEAD_LETTER_QUEUE = "IngestWorkDeadLetterQueue"
WORK_QUEUE = "IngestWorkQueue"
POSTGRES_SECRET = "PostgresSecret"  # noqa: S105 - a logical id  # nosec B105
ALARM_TOPIC = "AlarmTopic"
"""Logical ids of the core resources: CloudFormation names, keys of applied attributes."""


WORK_QUEUE_MAX_RECEIVES = 3
"""A work item whose worker failed this many times moves to the dead-letter queue."""
WORK_QUEUE_VISIBILITY_FACTOR = 6
"""AWS advises a visibility timeout of at least 6x the function timeout for an SQS trigger:
a batch being retried after a throttle or an error is then never handed out twice at once."""
WORK_QUEUE_RETENTION_S = 4 * 86400
"""Shorter than the dead-letter queue's 14 days: a standard queue's message keeps its first
enqueue time when it is dead-lettered, so the dead-letter queue must keep it longer."""
SQS_MAX_VISIBILITY_S = 43_200


def work_queue_visibility_s(spec: StackSpec) -> int:
    visibility = WORK_QUEUE_VISIBILITY_FACTOR * spec.worker_timeout_s
    if visibility > SQS_MAX_VISIBILITY_S:
        raise ValueError(
            f"ingest_worker timeout {spec.worker_timeout_s} s needs a visibility timeout of "
            f"{visibility} s; SQS allows at most {SQS_MAX_VISIBILITY_S} s"
        )
    return visibility


def table_logical_id(suffix: str) -> str:
    return "".join(part.capitalize() for part in suffix.replace("-", "_").split("_")) + "Table"


def core_resources(spec: StackSpec) -> list[Resource]:
    """The stream, the tables, the quarantine bucket, the queues, the secret and the topic.

    The work queue must exist before `chalice deploy`: Chalice subscribes the `ingest_worker`
    function to it by name and does not create it.
    """
    settings = spec.settings
    retain = spec.production
    resources: list[Resource] = [
        KinesisStream(STREAM, settings.stream_name, spec.shards, retain=retain)
    ]
    resources += [
        DynamoTable(
            table_logical_id(suffix),
            settings.table_name(suffix),
            tuple(keys),
            retain=retain,
            indexes=tuple(TABLE_INDEXES.get(suffix, ())),
        )
        for suffix, keys in TABLE_KEYS.items()
    ]
    resources += [
        PrivateBucket(
            QUARANTINE_BUCKET,
            settings.quarantine_bucket,
            expiration_days=settings.quarantine_retention_days,
            tls_only=spec.tls_only,
            retain=retain,
        ),
        Queue(FAILURE_QUEUE, spec.failure_queue_name),
        Queue(WORK_DEAD_LETTER_QUEUE, spec.work_dead_letter_queue_name),
        Queue(
            WORK_QUEUE,
            spec.work_queue_name,
            retention_s=WORK_QUEUE_RETENTION_S,
            visibility_timeout_s=work_queue_visibility_s(spec),
            dead_letter=Attr(WORK_DEAD_LETTER_QUEUE),
            max_receive_count=WORK_QUEUE_MAX_RECEIVES,
        ),
        Secret(
            POSTGRES_SECRET,
            spec.postgres_secret_name,
            description="PostgreSQL credentials of the MooVitamix load function",
            username="moovitamix",
        ),
        Topic(ALARM_TOPIC, spec.alarm_topic_name),
    ]
    return resources


ResourceBuilder = Callable[[StackSpec], list[Resource]]

BUILDERS: list[ResourceBuilder] = [core_resources, vpc_endpoint_resources]
"""Every builder of the stack, applied in order (a resource may reference earlier ones).

Hook for more infrastructure: append a builder, e.g. alarms and the dashboard, which get the
same spec (`spec.function_name("load")` for Lambda dimensions, `Attr(ALARM_TOPIC, "Ref")` for
alarm actions) and return resources that implement `infra.resources.Resource`. They are then
applied by `deploy`, removed by `destroy` and rendered into the CloudFormation template.
"""


def stack_resources(spec: StackSpec) -> list[Resource]:
    resources = [resource for build in BUILDERS for resource in build(spec)]
    ids = [resource.logical_id for resource in resources]
    duplicates = sorted({logical_id for logical_id in ids if ids.count(logical_id) > 1})
    if duplicates:
        raise ValueError(f"duplicate logical ids in the stack: {duplicates}")
    return resources


@dataclass
class StackResult:
    changes: list[Change]
    attributes: dict[str, dict[str, str]]

    @property
    def changed(self) -> list[Change]:
        return [
            change
            for change in self.changes
            if change.action not in ("unchanged", "absent", "retained")
        ]


def apply_stack(spec: StackSpec) -> StackResult:
    """Create or update every resource, in order."""
    ctx = ApplyContext()
    changes = [resource.apply(ctx) for resource in stack_resources(spec)]
    return StackResult(changes, ctx.attributes)


def destroy_stack(spec: StackSpec) -> StackResult:
    """Delete every resource, in reverse order; missing ones are reported `absent`."""
    ctx = ApplyContext()
    changes = [resource.delete(ctx) for resource in reversed(stack_resources(spec))]
    return StackResult(changes, ctx.attributes)


@dataclass
class Provisioned:
    """What exists after provisioning, and what this call created."""

    stream_arn: str = ""
    tables: dict[str, str] = field(default_factory=dict)
    bucket: str = ""
    failure_queue_url: str = ""
    failure_queue_arn: str = ""
    work_queue_url: str = ""
    work_queue_arn: str = ""
    work_dead_letter_queue_url: str = ""
    work_dead_letter_queue_arn: str = ""
    postgres_secret_arn: str = ""
    alarm_topic_arn: str = ""
    created: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)


def provision(
    settings: Settings, shard_count: int = 2, stage: str = "local", tls_only: bool | None = None
) -> Provisioned:
    """Apply the whole stack for these settings; what the local cloud and the deploy call.

    `tls_only` (the quarantine bucket's TLS-only policy) defaults to off for the emulator
    stages, whose endpoints speak plain HTTP, and on for any other stage.
    """
    if tls_only is None:
        tls_only = stage not in EMULATOR_STAGES
    result = apply_stack(
        StackSpec(settings, stage=stage, shard_count=shard_count, tls_only=tls_only)
    )
    return provisioned_from(settings, result)


def provisioned_from(settings: Settings, result: StackResult) -> Provisioned:
    """What an applied stack made, by role (also what `infra.deploy.deploy` applied)."""
    attributes = result.attributes
    return Provisioned(
        stream_arn=attributes[STREAM]["Arn"],
        tables={suffix: settings.table_name(suffix) for suffix in TABLE_KEYS},
        bucket=settings.quarantine_bucket,
        failure_queue_url=attributes[FAILURE_QUEUE]["QueueUrl"],
        failure_queue_arn=attributes[FAILURE_QUEUE]["Arn"],
        work_queue_url=attributes[WORK_QUEUE]["QueueUrl"],
        work_queue_arn=attributes[WORK_QUEUE]["Arn"],
        work_dead_letter_queue_url=attributes[WORK_DEAD_LETTER_QUEUE]["QueueUrl"],
        work_dead_letter_queue_arn=attributes[WORK_DEAD_LETTER_QUEUE]["Arn"],
        postgres_secret_arn=attributes[POSTGRES_SECRET]["Ref"],
        alarm_topic_arn=attributes[ALARM_TOPIC]["Ref"],
        created=[
            f"{change.resource}{f' ({change.details[0]})' if change.details else ''}"
            for change in result.changes
            if change.action == "created"
        ],
        changes=result.changes,
        attributes=attributes,
    )
