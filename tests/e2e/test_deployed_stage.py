"""The local cloud runs what the deploy code deployed, read back from the emulator.

The stage is deployed into moto by `infra.deploy.deploy` (as `make deploy-local` does); the
drivers read the functions, schedules and mappings back with the Lambda and EventBridge APIs
and behave as AWS does with what they find. A deployment that lacks a setting fails the way
AWS would fail with it (a bare `chalice deploy` recreating the load's mapping without its
failure settings; a mapping without bisect retries a crashed batch whole); a function or
mapping reconfigured in the emulator runs with its new settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from infra.deploy import spec_for
from infra.deploy.chalice_runner import run_chalice
from infra.deploy.check import check_deployment
from infra.spec import StackSpec
from infra.stages import FUNCTIONS
from infra.trigger import KinesisEventSourceSettings
from localcloud.chaos import Chaos
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


def test_a_bare_chalice_deploy_leaves_the_mapping_without_failure_settings_and_the_run_fails(
    tmp_path: Path, postgres_server: EmbeddedPostgres
) -> None:
    """What the issue warns of, for real: on a stage without the load's Kinesis mapping (here
    deleted, as on a fresh stage), `chalice deploy` alone (the deploy code's own Chalice call,
    without the step that applies the failure settings) creates the mapping with a batch size,
    window and starting position only. The local cloud reads that mapping back and drives it
    as Lambda would: the load function's `batchItemFailures` are ignored, so the records of a
    failed sink write are lost and the reconcile function fails the run; `status --check`
    names every missing setting."""
    failed: list[str] = []
    with LocalCloud(tmp_path / "state", records=RECORDS, postgres=postgres_server) as cloud:
        assert cloud.stage is not None
        stage = cloud.stage
        before = cloud.read_deployment().kinesis
        assert before is not None
        aws.client("lambda").delete_event_source_mapping(UUID=before.uuid)
        with (tmp_path / "chalice.log").open("w") as log:
            run_chalice(stage, "deploy", "--stage", stage.name, app_only=True, output=log)
        after = cloud.read_deployment().kinesis
        assert after is not None
        assert after.uuid != before.uuid  # Chalice created a new mapping
        trigger = after.settings
        assert trigger.batch_size == stage.settings.batch_size
        assert trigger.maximum_batching_window_in_seconds == stage.settings.batching_window_s
        assert not trigger.reports_batch_item_failures
        assert trigger.bisect_batch_on_function_error is False
        assert trigger.maximum_retry_attempts == -1
        assert trigger.on_failure_destination_arn is None
        assert after.destination_url is None
        assert trigger.parallelization_factor == 1  # Lambda's default, absent from moto's answer
        # moto leaves ParallelizationFactor out of a mapping created without it (AWS reports
        # its default, 1): the check names it too, as it names every setting not in place
        missing = {problem.setting for problem in check_deployment(spec_for(stage))}
        assert missing == {
            "FunctionResponseTypes",
            "BisectBatchOnFunctionError",
            "MaximumRetryAttempts",
            "MaximumRecordAgeInSeconds",
            "DestinationConfig",
            "ParallelizationFactor",
        }
        _fail_first_batch_write(failed)
        report = cloud.run()

    assert len(failed) == 1, failed
    assert sum(shard.redeliveries for shard in report.shards.values()) == 0
    assert sum(shard.failure_messages for shard in report.shards.values()) == 0
    lost = sum(
        counts["fetched"] - counts["quarantined"] - min(counts["stored"].values())
        for counts in report.entities.values()
    )
    assert report.status == "failed"
    assert lost > 0
    assert sum(counts.get("missing", 0) for counts in report.entities.values()) == lost
    assert report.metrics["RunFailed"] == 1
    assert report.metrics["ReconciliationDifference"] == lost


@pytest.mark.parametrize("bisect", [True, False])
def test_a_crashed_batch_is_split_only_with_bisect_in_the_deployed_batch_size(
    tmp_path: Path, postgres_server: EmbeddedPostgres, bisect: bool
) -> None:
    """The load function crashes once (chaos `consumer-crash`, on its first batch). Deployed
    with BisectBatchOnFunctionError, Lambda splits that batch and retries the halves; without,
    it retries the whole batch. The batches are of the deployed size (changed to 7 in the
    emulator, as an operator would), and re-delivery makes the run succeed either way."""
    chaos = Chaos({"consumer-crash": 0.0001}, seed=1)  # at its first opportunity, then not
    with LocalCloud(
        tmp_path / "state", records=RECORDS, postgres=postgres_server, chaos=chaos
    ) as cloud:
        deployed = cloud.read_deployment()
        assert deployed.kinesis is not None
        aws.client("lambda").update_event_source_mapping(
            UUID=deployed.kinesis.uuid, BatchSize=7, BisectBatchOnFunctionError=bisect
        )
        report = cloud.run()

    assert report.status == "succeeded", report.errors
    assert report.chaos == {"consumer-crash": 1}
    shards = list(report.shards.values())
    assert sum(shard.handler_errors for shard in shards) == 1
    assert sum(shard.bisections for shard in shards) == (1 if bisect else 0)
    assert sum(shard.redeliveries for shard in shards) == (0 if bisect else 1)
    assert sum(shard.invocations for shard in shards) >= -(-3 * RECORDS // 7)  # batches of 7


def test_each_function_process_runs_with_its_own_deployed_environment(
    tmp_path: Path, postgres_server: EmbeddedPostgres
) -> None:
    """Only the ingest function is reconfigured (UpdateFunctionConfiguration: page size 4): as
    on AWS, the ingest reads pages of 4 while the other functions keep their environment, and
    the cloud reads the run back with the reconcile function's."""
    with LocalCloud(
        tmp_path / "state", records=RECORDS, postgres=postgres_server, function_processes=True
    ) as cloud:
        assert cloud.stage is not None
        lambda_client = aws.client("lambda")
        name = cloud.stage.function_name("ingest")
        variables = lambda_client.get_function_configuration(FunctionName=name)["Environment"][
            "Variables"
        ]
        lambda_client.update_function_configuration(
            FunctionName=name, Environment={"Variables": {**variables, "PIPELINE_PAGE_SIZE": "4"}}
        )
        report = cloud.run()
        deployed = cloud.read_deployment()
        assert deployed.functions["ingest"].environment["PIPELINE_PAGE_SIZE"] == "4"
        assert "4" not in {
            deployed.functions[function].environment.get("PIPELINE_PAGE_SIZE")
            for function in ("load", "ingest_worker", "reconcile")
        }
        assert os.environ.get("PIPELINE_PAGE_SIZE") != "4"

    assert report.status == "succeeded", report.errors
    assert report.metrics["PagesFetched"] == 3 * RECORDS // 4
    assert {counts["published"] for counts in report.entities.values()} == {RECORDS}
