"""One deployment as the resource builders see it: its settings, stage and deploy options.

Resource builders, IAM policies, the trigger's failure settings and the packaged templates all
read names from a `StackSpec`; the formulas behind them are `infra.names`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib.settings import Settings
from infra import names
from infra.names import APP_NAME

if TYPE_CHECKING:
    from infra.network import VpcEndpoints

__all__ = ["APP_NAME", "StackSpec"]


@dataclass(frozen=True)
class StackSpec:
    """One deployment: its settings, its Chalice stage and the stream's shard count."""

    settings: Settings
    stage: str = "local"
    app_name: str = APP_NAME
    shard_count: int | None = None
    worker_timeout_s: int = 900
    """`lambda_timeout` of the `ingest_worker` function (the work queue's visibility timeout
    is derived from it); `infra.deploy` reads it from the stage's Chalice config."""
    production: bool = False
    """Keep the stream, the tables and the quarantine bucket when the stack or the stage is
    removed (`DeletionPolicy: Retain`); `infra.stages.Stage.production` decides it."""
    tls_only: bool = True
    """Give the quarantine bucket its TLS-only policy; off only for an emulator reached over
    plain HTTP (it enforces the policy and would refuse every request)."""
    vpc_endpoints: VpcEndpoints | None = None
    """The VPC endpoints of a stage whose functions run in a VPC (`infra.network`); none
    when the stage declares none (its subnets reach AWS through a NAT, or no VPC at all)."""

    @property
    def prefix(self) -> str:
        """Prefix of every stage-owned name (the table prefix, e.g. `moovitamix-dev`)."""
        return self.settings.table_prefix

    @property
    def shards(self) -> int:
        return self.shard_count if self.shard_count is not None else self.settings.stream_shards

    @property
    def failure_queue_name(self) -> str:
        """Where the Kinesis trigger sends batches it gave up on (metadata, not the records)."""
        return names.failure_queue(self.settings)

    @property
    def work_queue_name(self) -> str:
        """The fan-out work queue (`PIPELINE_WORK_QUEUE`): the `ingest_worker` trigger."""
        return names.work_queue(self.settings)

    @property
    def work_dead_letter_queue_name(self) -> str:
        """Where a work item goes after failing `WORK_QUEUE_MAX_RECEIVES` times."""
        return names.dead_letter_queue(self.work_queue_name)

    @property
    def postgres_secret_name(self) -> str:
        return names.postgres_secret(self.prefix)

    @property
    def alarm_topic_name(self) -> str:
        return names.alarm_topic(self.prefix)

    def function_name(self, function: str) -> str:
        """The deployed Lambda name of a Chalice function: `<app>-<stage>-<function>`."""
        return names.function_name(self.app_name, self.stage, function)

    def log_group(self, function: str) -> str:
        """The log group Lambda writes a Chalice function's logs to."""
        return names.log_group(self.function_name(function))

    def rule_name(self, function: str) -> str:
        """The EventBridge rule `chalice deploy` creates for a scheduled function."""
        return names.rule_name(self.app_name, self.stage, function)
