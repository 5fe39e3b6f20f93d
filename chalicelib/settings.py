"""Typed settings, read from environment variables in one place.

Stages in `.chalice/config.json` set these variables for Lambda; the local cloud sets them for
its in-process handlers. `DeploySettings` holds what shapes the deployed resources,
`RunSettings` what the functions read as they run; `Settings` is both, under the same
variable names. AWS endpoints are not settings: boto3 and PynamoDB read the standard
`AWS_ENDPOINT_URL` themselves.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, HttpUrl, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeploySettings(BaseSettings):
    """Read when a stage is deployed (app.py, infra/): schedules, the trigger, shards, retention.

    Changing one of these changes the deployed resources, not only what a function does next.
    """

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", frozen=True)

    schedule: str = Field(
        default="rate(1 day)", description="EventBridge schedule expression of the ingestion"
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Kinesis records per load invocation (500: the defaults sweep's best with "
        "AWS's limits, docs/performance.md#defaults-batch-size-batching-window-shards-concurrency)",
    )
    batching_window_s: int = Field(
        default=5, ge=0, le=300, description="Seconds the trigger waits to fill a batch"
    )
    trigger_retry_attempts: int = Field(
        default=10, ge=-1, le=10_000, description="Retries of a failing batch (-1: until expiry)"
    )
    trigger_max_record_age_s: int = Field(
        default=21_600,
        ge=-1,
        le=604_800,
        description="Records older than this go to the on-failure queue (-1: never)",
    )
    trigger_bisect_on_error: bool = Field(
        default=True, description="Split a failing batch in two to isolate the bad record"
    )
    stream_shards: int = Field(default=2, ge=1, description="Shards of the Kinesis stream")
    quarantine_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Days a quarantined record (personal data: emails) is kept before the "
        "bucket's lifecycle rule deletes it (read at deploy)",
    )
    reconcile_schedule: str = Field(
        default="rate(15 minutes)",
        description="EventBridge schedule of the reconciliation of finished runs (read at deploy)",
    )


class RunSettings(BaseSettings):
    """Read by the functions as they run: the source, the stores, deadlines, limits."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", frozen=True)

    api_url: HttpUrl = Field(
        default=HttpUrl("http://127.0.0.1:8000"), description="Base URL of the MooVitamix API"
    )
    page_size: int = Field(default=100, ge=1, le=100, description="Items per API page")
    fetch_concurrency: int = Field(default=4, ge=1, le=32, description="Pages fetched at once")
    request_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one connect or one socket read"
    )
    request_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest time one API response may take, from sending the request "
        "(retries included) to the last byte of its body; past it the page fails",
    )
    max_response_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest API response body read (streamed); a larger one fails its page "
        "before it fills the memory",
    )
    max_retries: int = Field(default=5, ge=0, description="Retries per API request")
    backoff_factor_s: float = Field(default=0.5, ge=0, description="Base of the API backoff")
    max_backoff_s: float = Field(default=20.0, gt=0, description="Longest single API backoff")
    max_pages: int = Field(
        default=100_000, ge=1, description="Guard against pagination that never ends"
    )
    resources: str = Field(
        default="users,tracks,listen_history", description="Comma list of resources to ingest"
    )
    stream_name: str = Field(default="moovitamix-dev-events", description="Kinesis stream")
    put_records_max_attempts: int = Field(default=8, ge=1, description="PutRecords attempts")
    put_records_backoff_s: float = Field(default=0.1, ge=0, description="PutRecords backoff")
    table_prefix: str = Field(default="moovitamix-dev", description="Prefix of DynamoDB tables")
    quarantine_bucket: str = Field(
        default="moovitamix-dev-quarantine",
        description="S3 bucket keeping every record that cannot be stored, with its reason",
    )
    sinks: str = Field(
        default="dynamodb,postgres", description="Comma list of sinks the load writes"
    )
    postgres_secret_arn: str | None = Field(
        default=None,
        description="Secrets Manager secret (ARN or name) holding the RDS credentials as JSON: "
        "host, port, username, password, dbname",
    )
    postgres_dsn: SecretStr | None = Field(
        default=None,
        description="libpq connection string, for local use when there is no secret; never logged",
    )
    postgres_sslmode: Literal[
        "disable", "allow", "prefer", "require", "verify-ca", "verify-full"
    ] = Field(
        default="verify-full",
        description="libpq sslmode of connections made from the secret: verify-full (the "
        "default) encrypts and checks the server's certificate and host name against "
        "postgres_sslrootcert; the local stages, on one machine, set disable",
    )
    postgres_sslrootcert: str | None = Field(
        default=None,
        description="PEM bundle of the CAs the server's certificate must chain to (AWS: the "
        "RDS CA bundle shipped in the package); a relative path is taken from the package "
        "root (/var/task on Lambda)",
    )
    postgres_connect_timeout_s: int = Field(
        default=5, ge=1, le=60, description="Seconds to wait for a PostgreSQL connection"
    )
    event_bus_name: str = Field(
        default="default", description="EventBridge bus of the DatasetUpdated event"
    )

    # Read at deploy time: the Kinesis trigger's failure handling (issue 4), applied to the
    # event-source mapping after `chalice deploy` and in the packaged templates.
    ingest_stop_margin_s: float = Field(
        default=120.0,
        ge=0,
        description="Seconds before the Lambda timeout at which the ingest checkpoints, stops "
        "and continues in a new invocation",
    )
    ingest_max_invocations: int = Field(
        default=24, ge=1, description="Invocations one run may use before it is declared failed"
    )
    reconcile_grace_s: int = Field(
        default=7 * 3600,
        ge=0,
        description="Seconds after its start within which a run may still balance; after it, "
        "an unbalanced run is declared failed (more than the mapping's maximum record age)",
    )
    write_concurrency: int = Field(
        default=4, ge=1, le=32, description="Concurrent batch writes per sink and load batch"
    )
    change_detection: bool = Field(
        default=True,
        description="Skip records whose exact content every sink already stored (the "
        "fingerprint rides in the DynamoDB rows: needs the dynamodb sink, else it is off)",
    )
    max_future_s: int = Field(
        default=86_400,
        ge=0,
        le=10 * 366 * 86_400,
        description="How many seconds ahead of the clock an updated_at may be; a later one "
        "breaks the contract and is quarantined (it would win against every correction)",
    )
    max_quarantine_ratio: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="Quality gate: a resource whose quarantined share of the fetched records "
        "is above this fails the run (1.0: never)",
    )
    pages_per_worker: int = Field(
        default=2000,
        ge=0,
        description="Pages one invocation fetches; a resource with more pages fans out to "
        "work items on the SQS work queue (0: never)",
    )
    work_queue: str = Field(
        default="moovitamix-dev-ingest-work",
        description="SQS queue of ingest work items (page ranges) for the ingest_worker function",
    )


class Settings(RunSettings, DeploySettings):
    """Every knob of the pipeline, with the production default (both groups, one namespace)."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", frozen=True)

    @property
    def resource_list(self) -> list[str]:
        return [name.strip() for name in self.resources.split(",") if name.strip()]

    @property
    def sink_list(self) -> list[str]:
        return [name.strip() for name in self.sinks.split(",") if name.strip()]

    def table_name(self, suffix: str) -> str:
        return f"{self.table_prefix}-{suffix}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process; cached because Lambda reuses the process across invocations."""
    return Settings()
