"""The local cloud runs what the deploy code deployed, read back from the emulator.

The stage is deployed into moto by `infra.deploy.deploy` (as `make deploy-local` does); the
drivers read the functions, schedules and mappings back with the Lambda and EventBridge APIs
and behave as AWS does with what they find. A deployment that lacks a setting fails the way
AWS would fail with it; a function reconfigured in the emulator runs with its new settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from infra.spec import StackSpec
from infra.stages import FUNCTIONS
from infra.trigger import KinesisEventSourceSettings
from localcloud.emulators.postgres import EmbeddedPostgres
from localcloud.stack import LocalCloud

pytestmark = pytest.mark.e2e

RECORDS = 20
ENTITY_TABLES = ("-users", "-tracks", "-listen_history")


def test_the_stage_is_deployed_and_the_drivers_use_what_was_deployed(
    tmp_path: Path, postgres_server: EmbeddedPostgres
) -> None:
    with LocalCloud(tmp_path / "state", records=RECORDS, postgres=postgres_server) as cloud:
        assert cloud.stage is not None
        stage = cloud.stage
        lambda_client = aws.client("lambda")
        deployed = cloud.read_deployment()
        for function in FUNCTIONS:
            configuration = lambda_client.get_function_configuration(
                FunctionName=stage.function_name(function)
            )
            found = deployed.functions[function]
            assert found.environment == configuration["Environment"]["Variables"]
            assert found.memory_mb == stage.function_setting(function, "lambda_memory_size")
            assert found.timeout_s == stage.function_setting(function, "lambda_timeout")
            assert found.role.endswith(f":role/{stage.function_name(function)}")
        # the process runs the functions with their deployed environment
        for name, value in deployed.functions["load"].environment.items():
            assert os.environ[name] == value
        assert os.environ["PIPELINE_RECONCILE_GRACE_S"] == "0"
        assert set(deployed.schedules) == {"ingest", "reconcile"}
        assert deployed.schedules["ingest"].endswith(f"rule/{stage.rule_name('ingest')}")
        assert deployed.kinesis is not None
        failure = KinesisEventSourceSettings.from_spec(StackSpec(stage.settings, stage=stage.name))
        trigger = deployed.kinesis.settings
        assert trigger.batch_size == stage.settings.batch_size
        assert trigger.maximum_batching_window_in_seconds == stage.settings.batching_window_s
        assert trigger.reports_batch_item_failures
        assert trigger.bisect_batch_on_function_error is failure.bisect_batch_on_function_error
        assert trigger.maximum_retry_attempts == failure.maximum_retry_attempts
        assert trigger.maximum_record_age_in_seconds == failure.maximum_record_age_in_seconds
        assert deployed.kinesis.destination_url is not None
        assert deployed.kinesis.destination_url.endswith("-load-failures")
        assert deployed.work is not None
        assert deployed.work.batch_size == 1

        first = cloud.run()
        assert first.status == "succeeded", first.errors
        assert first.reconcile is not None
        assert first.reconcile["runs"] == {first.run_id: "succeeded"}

        # an operator changes a function's configuration: the next run uses it
        for function in FUNCTIONS:
            name = stage.function_name(function)
            variables = lambda_client.get_function_configuration(FunctionName=name)["Environment"][
                "Variables"
            ]
            lambda_client.update_function_configuration(
                FunctionName=name,
                Environment={"Variables": {**variables, "PIPELINE_PAGE_SIZE": "4"}},
            )
        second = cloud.run()
        assert second.status == "succeeded", second.errors
        assert os.environ["PIPELINE_PAGE_SIZE"] == "4"
        assert second.metrics["PagesFetched"] == 3 * RECORDS // 4
        assert sum(c["published"] for c in second.entities.values()) == 0


def _fail_first_batch_write(failed: list[str]) -> None:
    """DynamoDB refuses the sink's first BatchWriteItem to an entity table (a botocore hook on
    the functions' DynamoDB client, the AWS boundary): the load function reports the batch in
    `batchItemFailures`."""

    def refuse(params: dict[str, Any], **_: object) -> None:
        tables = list(params.get("RequestItems", {}))
        if not failed and any(table.endswith(ENTITY_TABLES) for table in tables):
            failed.extend(tables)
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "refused by the test"}},
                "BatchWriteItem",
            )

    aws.client("dynamodb").meta.events.register(
        "before-parameter-build.dynamodb.BatchWriteItem", refuse
    )


@pytest.mark.parametrize("reports_failures", [True, False])
def test_a_failed_sink_write_is_redelivered_only_with_report_batch_item_failures(
    tmp_path: Path, postgres_server: EmbeddedPostgres, reports_failures: bool
) -> None:
    """One DynamoDB write of the load function fails: it reports the batch's records in
    `batchItemFailures`. Deployed with ReportBatchItemFailures, Lambda re-delivers them and the
    run succeeds; deployed without it (as a bare `chalice deploy` leaves the mapping), Lambda
    ignores the answer, the records are lost and the reconcile function fails the run."""
    failed: list[str] = []
    with LocalCloud(tmp_path / "state", records=RECORDS, postgres=postgres_server) as cloud:
        deployed = cloud.read_deployment()
        assert deployed.kinesis is not None
        if not reports_failures:
            aws.client("lambda").update_event_source_mapping(
                UUID=deployed.kinesis.uuid, FunctionResponseTypes=[]
            )
        assert cloud.mapping_settings().reports_batch_item_failures is reports_failures
        _fail_first_batch_write(failed)
        report = cloud.run()

    assert len(failed) == 1, failed
    redeliveries = sum(shard.redeliveries for shard in report.shards.values())
    missing = sum(counts.get("missing", 0) for counts in report.entities.values())
    lost = sum(
        counts["fetched"] - counts["quarantined"] - min(counts["stored"].values())
        for counts in report.entities.values()
    )
    if reports_failures:
        assert report.status == "succeeded", report.errors
        assert redeliveries == 1
        assert missing == lost == 0
        assert report.metrics["RunSucceeded"] == 1
    else:
        assert report.status == "failed"
        assert redeliveries == 0
        assert missing == lost > 0
        assert report.metrics["RunFailed"] == 1
        assert report.metrics["ReconciliationDifference"] == missing
        assert any("not in dynamodb" in error for error in report.errors), report.errors
