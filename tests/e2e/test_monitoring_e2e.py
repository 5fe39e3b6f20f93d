"""Monitoring end to end on the embedded local cloud: metrics, alarms, dashboard, logs.

One cloud with a flaky API (429s and 5xx that retries absorb) serves most tests, with one run
that no test repeats (a test that needs another run has a cloud of its own: they run in any
order, on any xdist worker); more clouds provoke what cannot share it: Kinesis rejecting
records, a load function that crashes on every batch (chaos) fed poison records, an API that
is down, a work item that keeps failing. Every condition is real, made at
the boundaries (the API, the trigger, botocore hooks), never by replacing pipeline code; the
run-outcome metrics are read back from CloudWatch, and their source is checked to be the
reconcile function (the log group its EMF lines went to). Metrics AWS publishes itself and the
local cloud cannot cause (throttles), are published the way AWS would, at a moment of their
own so they disturb no other test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.observability.catalogue import NAMESPACE
from infra.alarms import alarm_definitions
from infra.dashboard import dashboard_body, metric_lines
from localcloud.chaos import Chaos
from localcloud.emulators.moto_process import free_port
from localcloud.fakeapi import FakeApiServer, FaultInjector
from localcloud.monitoring.emf_extraction import dimension_list
from localcloud.run_report import RunReport
from localcloud.stack import LocalCloud
from tests.helpers.contract_server import UNAVAILABLE, ContractServer, odd_rows

pytestmark = pytest.mark.e2e

PREFIX = "moovitamix-local"
# 11 attempts a request: a streak of faults that long (0.3 ** 11, about 2e-6) never happens, so
# every injected fault is retried, whichever request the concurrent order gives it to
FAST_RETRIES = {
    "PIPELINE_BACKOFF_FACTOR_S": "0",
    "PIPELINE_PAGE_SIZE": "10",
    "PIPELINE_MAX_RETRIES": "10",
}

PROVOCATIONS = {
    "pipeline-stale": "test_a_stale_pipeline_raises_the_stale_alarm",
    "run-failed": "test_a_broken_load_with_poison_records_raises_its_alarms",
    "reconciliation-mismatch": "test_a_broken_load_with_poison_records_raises_its_alarms",
    "quarantine-not-empty": "test_a_broken_load_with_poison_records_raises_its_alarms",
    "load-errors": "test_a_broken_load_with_poison_records_raises_its_alarms",
    "ingest-errors": "test_an_api_outage_raises_ingest_errors",
    "putrecords-failures": "test_rejected_put_records_are_counted_and_alarmed",
    "load-failures-queue": "test_a_message_in_the_on_failure_queue_raises_its_alarm",
    "iterator-age": "test_alarms_on_metrics_only_aws_publishes",
    "ingest-throttles": "test_alarms_on_metrics_only_aws_publishes",
    "load-throttles": "test_alarms_on_metrics_only_aws_publishes",
    "dynamodb-throttles": "test_alarms_on_metrics_only_aws_publishes",
    "reconcile-errors": "test_alarms_on_metrics_only_aws_publishes",
    "reconcile-throttles": "test_alarms_on_metrics_only_aws_publishes",
    "ingest-worker-errors": "test_a_work_item_that_keeps_failing_is_dead_lettered_and_alarmed",
    "ingest-worker-throttles": "test_alarms_on_metrics_only_aws_publishes",
    "ingest-work-dlq": "test_a_dead_lettered_work_item_raises_its_alarm",
    "quality-gate": "test_a_source_that_breaks_the_contract_everywhere_raises_the_quality_gate",
}
"""Which test provokes each alarm; a test keeps it complete."""


@dataclass
class FirstRun:
    report: RunReport
    retries_injected: int


@pytest.fixture(scope="module")
def flaky_api() -> Iterator[FakeApiServer]:
    # Faults are drawn in request order, which concurrency shuffles; FAST_RETRIES gives every
    # request more attempts than any streak of faults is long.
    faults = FaultInjector({"api-5xx": 0.2, "api-429": 0.1}, seed=5, retry_after=0)
    with FakeApiServer(records=30, seed=5, faults=faults) as server:
        yield server


@pytest.fixture(scope="module")
def cloud(
    flaky_api: FakeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCloud]:
    with LocalCloud(
        tmp_path_factory.mktemp("monitoring"), api_url=flaky_api.url, extra_env=FAST_RETRIES
    ) as local:
        yield local


@pytest.fixture(scope="module")
def first_run(cloud: LocalCloud, flaky_api: FakeApiServer) -> FirstRun:
    report = cloud.run()
    assert flaky_api.faults is not None
    injected = flaky_api.faults.injected["api-5xx"] + flaky_api.faults.injected["api-429"]
    return FirstRun(report, injected)


def alarm_name(slug: str) -> str:
    return f"{PREFIX}-{slug}"


RECONCILE_LOG_GROUP = "/aws/lambda/moovitamix-pipeline-local-reconcile"


def emf_lines(metric: str) -> dict[str, list[dict[str, Any]]]:
    """{log group: EMF documents carrying `metric`}, from the emulator's CloudWatch Logs: where
    Lambda puts the lines a function writes, so the group says which function wrote them."""
    logs = aws.client("logs")
    found: dict[str, list[dict[str, Any]]] = {}
    for page in logs.get_paginator("describe_log_groups").paginate(
        logGroupNamePrefix="/aws/lambda/"
    ):
        for group in page["logGroups"]:
            name = group["logGroupName"]
            for events in logs.get_paginator("filter_log_events").paginate(logGroupName=name):
                for event in events["events"]:
                    document = json.loads(event["message"])
                    names = {
                        definition["Name"]
                        for directive in document["_aws"]["CloudWatchMetrics"]
                        for definition in directive["Metrics"]
                    }
                    if metric in names:
                        found.setdefault(name, []).append(document)
    return found


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_equal_the_run_s_counts(first_run: FirstRun) -> None:
    report = first_run.report
    assert report.status == "succeeded", report.errors
    entities = report.entities.values()
    assert report.metrics["RecordsFetched"] == sum(c["fetched"] for c in entities) == 90
    assert report.metrics["RecordsPublished"] == sum(c["published"] for c in entities)
    assert report.metrics["RecordsWritten"] == sum(sum(c["written"].values()) for c in entities)
    assert report.metrics["RecordsQuarantined"] == sum(c["quarantined"] for c in entities) == 0
    assert report.metrics["RecordsUnchanged"] == 0
    assert report.metrics["PagesFetched"] == 9  # 30 rows per resource, 10 per page
    assert report.metrics["ApiRetries"] == first_run.retries_injected > 0
    assert report.metrics["RunSucceeded"] == 1
    assert report.metrics["RunFailed"] == 0
    assert report.metrics["ReconciliationDifference"] == 0
    assert report.metrics["QuarantineBacklog"] == 0
    assert report.metrics["Freshness"] == 0
    assert report.metrics["PutRecordsFailedRecords"] == 0
    assert report.metrics["EndToEndLatency"] > 0
    assert report.metrics["FetchDuration"] > 0
    assert "ApiErrors" not in report.metrics


def test_the_run_outcome_metrics_are_written_by_the_reconcile_function(
    cloud: LocalCloud, first_run: FirstRun
) -> None:
    """RunSucceeded & co. of the succeeded run, read back from CloudWatch above, were written
    by the reconcile function (its log group), which also kept the last success in the runs
    table and published DatasetUpdated."""
    report = first_run.report
    for metric in ("RunSucceeded", "RunFailed", "ReconciliationDifference", "QuarantineBacklog"):
        assert set(emf_lines(metric)) == {RECONCILE_LOG_GROUP}, metric
    [outcome] = [d for d in emf_lines("RunSucceeded")[RECONCILE_LOG_GROUP] if "RunFailed" in d]
    assert (outcome["RunSucceeded"], outcome["RunFailed"]) == ([1.0], [0.0])
    assert report.reconcile is not None
    assert report.reconcile["runs"] == {report.run_id: "succeeded"}
    marker = wiring.manifests(cloud.settings).get("#last-success") or {}
    assert marker["run"] == report.run_id
    assert marker["succeeded_at"] == report.reconcile["last_success_at"]
    assert report.event is not None
    assert report.event["detail"]["run_id"] == report.run_id
    assert report.reconcile["events"][report.run_id] == report.event["id"]


def test_the_json_summary_has_metrics_and_alarms(first_run: FirstRun) -> None:
    summary = json.loads(json.dumps(first_run.report.as_dict()))
    assert summary["metrics"]["RecordsFetched"] == 90
    assert set(summary["alarms"]) == {a["AlarmName"] for a in definitions(first_run)}


def definitions(first_run: FirstRun) -> list[dict[str, Any]]:
    from chalicelib.settings import get_settings
    from infra.stage import StageResources

    resources = StageResources.from_settings(get_settings(), "local")
    return alarm_definitions(resources, f"arn:aws:sns:us-east-1:123456789012:{PREFIX}-alarms")


# -- alarms -------------------------------------------------------------------------------------


def test_every_alarm_exists_and_is_ok_after_a_clean_run(
    cloud: LocalCloud, first_run: FirstRun
) -> None:
    expected = {a["AlarmName"]: a for a in definitions(first_run)}
    stored = {
        alarm["AlarmName"]: alarm
        for page in aws.client("cloudwatch")
        .get_paginator("describe_alarms")
        .paginate(AlarmNamePrefix=f"{PREFIX}-")
        for alarm in page["MetricAlarms"]
    }
    assert set(stored) == set(expected)
    topics = [t["TopicArn"] for t in aws.client("sns").list_topics()["Topics"]]
    for name, alarm in stored.items():
        assert alarm["AlarmDescription"] == expected[name]["AlarmDescription"]
        assert alarm["AlarmActions"] == [f"arn:aws:sns:us-east-1:123456789012:{PREFIX}-alarms"]
        assert alarm["AlarmActions"][0] in topics
    assert first_run.report.alarms == dict.fromkeys(sorted(expected), "OK")


def test_every_alarm_has_a_provocation() -> None:
    slugs = {a["AlarmName"].removeprefix(f"{PREFIX}-") for a in definitions_for_local()}
    assert set(PROVOCATIONS) == slugs
    tests = {name for name in globals() if name.startswith("test_")}
    assert set(PROVOCATIONS.values()) <= tests


def definitions_for_local() -> list[dict[str, Any]]:
    from chalicelib.settings import Settings
    from infra.chalice_config import stage_environment
    from infra.stage import StageResources

    environment = stage_environment("local")
    settings = Settings(
        table_prefix=environment["PIPELINE_TABLE_PREFIX"],
        stream_name=environment["PIPELINE_STREAM_NAME"],
    )
    return alarm_definitions(StageResources.from_settings(settings, "local"), "arn:topic")


def test_a_stale_pipeline_raises_the_stale_alarm(cloud: LocalCloud, first_run: FirstRun) -> None:
    """The reconcile schedule fires with no run to settle: the function reports the data's age
    (Freshness, from the last success it keeps in the runs table) and no run outcome; a day
    without a RunSucceeded breaches the stale alarm."""
    before = {group: len(lines) for group, lines in emf_lines("RunSucceeded").items()}
    answer = cloud.fire_reconcile()
    cloud.monitoring.publish()
    assert answer["runs"] == {}
    assert {group: len(lines) for group, lines in emf_lines("RunSucceeded").items()} == before
    last_success = datetime.fromisoformat(answer["last_success_at"])
    latest = emf_lines("Freshness")[RECONCILE_LOG_GROUP][-1]
    measured_at = latest["_aws"]["Timestamp"] / 1000.0
    [freshness] = latest["Freshness"]
    assert freshness == pytest.approx(measured_at - last_success.timestamp(), abs=1.0)
    assert freshness > 0
    now = datetime.now(UTC)
    assert cloud.monitoring.evaluate(now=now)[alarm_name("pipeline-stale")] == "OK"
    a_day_later = now + timedelta(hours=26)
    assert cloud.monitoring.evaluate(now=a_day_later)[alarm_name("pipeline-stale")] == "ALARM"
    assert cloud.monitoring.evaluate(now=now)[alarm_name("pipeline-stale")] == "OK"


@pytest.mark.parametrize(
    ("slug", "namespace", "metric", "dimension", "value", "days"),
    [
        (
            "iterator-age",
            "AWS/Kinesis",
            "GetRecords.IteratorAgeMilliseconds",
            ("StreamName", "moovitamix-local-events"),
            3_600_000,
            3,
        ),
        (
            "ingest-throttles",
            "AWS/Lambda",
            "Throttles",
            ("FunctionName", "moovitamix-pipeline-local-ingest"),
            1,
            4,
        ),
        (
            "load-throttles",
            "AWS/Lambda",
            "Throttles",
            ("FunctionName", "moovitamix-pipeline-local-load"),
            2,
            5,
        ),
        (
            "dynamodb-throttles",
            "AWS/DynamoDB",
            "WriteThrottleEvents",
            ("TableName", "moovitamix-local-users"),
            7,
            6,
        ),
        (
            "reconcile-errors",
            "AWS/Lambda",
            "Errors",
            ("FunctionName", "moovitamix-pipeline-local-reconcile"),
            1,
            7,
        ),
        (
            "reconcile-throttles",
            "AWS/Lambda",
            "Throttles",
            ("FunctionName", "moovitamix-pipeline-local-reconcile"),
            1,
            8,
        ),
        (
            "ingest-worker-errors",
            "AWS/Lambda",
            "Errors",
            ("FunctionName", "moovitamix-pipeline-local-ingest_worker"),
            1,
            9,
        ),
        (
            "ingest-worker-throttles",
            "AWS/Lambda",
            "Throttles",
            ("FunctionName", "moovitamix-pipeline-local-ingest_worker"),
            3,
            10,
        ),
    ],
)
def test_alarms_on_metrics_only_aws_publishes(
    cloud: LocalCloud,
    first_run: FirstRun,
    slug: str,
    namespace: str,
    metric: str,
    dimension: tuple[str, str],
    value: float,
    days: int,
) -> None:
    moment = datetime.now(UTC) + timedelta(days=days)
    assert cloud.monitoring.evaluate(now=moment)[alarm_name(slug)] == "OK"
    aws.client("cloudwatch").put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": dimension[0], "Value": dimension[1]}],
                "Timestamp": moment - timedelta(seconds=30),
                "Value": value,
            }
        ],
    )
    assert cloud.monitoring.evaluate(now=moment)[alarm_name(slug)] == "ALARM"


def test_rejected_put_records_are_counted_and_alarmed(tmp_path: Path) -> None:
    """Kinesis rejects part of one PutRecords call (chaos `kinesis-partial`, a botocore hook):
    the ingest retries those records and counts them, and the alarm fires. On a cloud of its
    own: the shared one keeps the single run the other tests read."""
    rejected: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        rejected.append(int(parsed.get("FailedRecordCount", 0)))

    with (
        FakeApiServer(records=30, seed=5) as api,
        LocalCloud(
            tmp_path / "state",
            api_url=api.url,
            extra_env=FAST_RETRIES,
            chaos=Chaos({"kinesis-partial": 0.0001}, seed=3),  # at the first call, then not
        ) as local,
    ):
        aws.client("kinesis").meta.events.register_last("after-call.kinesis.PutRecords", count)
        report = local.run()
        sinks = len(local.settings.sink_list)

    assert report.status == "succeeded", report.errors
    assert report.chaos == {"kinesis-partial": 1}
    assert len([failed for failed in rejected if failed]) == 1
    assert report.metrics["PutRecordsFailedRecords"] == sum(rejected) > 0
    assert report.alarms[alarm_name("putrecords-failures")] == "ALARM"
    # every record stored once per sink: the rejected ones were published again, not lost
    assert report.metrics["RecordsWritten"] == 90 * sinks


def test_a_message_in_the_on_failure_queue_raises_its_alarm(
    cloud: LocalCloud, first_run: FirstRun
) -> None:
    sqs = aws.client("sqs")
    queue = sqs.create_queue(QueueName=f"{PREFIX}-load-failures")["QueueUrl"]
    slug = alarm_name("load-failures-queue")
    cloud.monitoring.publish()
    assert cloud.monitoring.evaluate()[slug] == "OK"
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"shard": "shardId-000000000000"}))
    cloud.monitoring.publish()
    try:
        assert cloud.monitoring.evaluate()[slug] == "ALARM"
    finally:
        sqs.purge_queue(QueueUrl=queue)


def test_a_dead_lettered_work_item_raises_its_alarm(cloud: LocalCloud, first_run: FirstRun) -> None:
    """The local cloud provisions the work queue's dead-letter queue like the deploy does."""
    sqs = aws.client("sqs")
    queue = sqs.get_queue_url(QueueName=f"{PREFIX}-ingest-work-dlq")["QueueUrl"]
    slug = alarm_name("ingest-work-dlq")
    cloud.monitoring.publish()
    assert cloud.monitoring.evaluate()[slug] == "OK"
    item = {"run_id": "r", "resource": "listen_history", "first_page": 1, "last_page": 2}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(item))
    cloud.monitoring.publish()
    try:
        assert cloud.monitoring.evaluate()[slug] == "ALARM"
    finally:
        sqs.purge_queue(QueueUrl=queue)


# -- dashboard ----------------------------------------------------------------------------------


def test_the_dashboard_in_cloudwatch_is_the_definition_and_its_metrics_have_data(
    cloud: LocalCloud, first_run: FirstRun
) -> None:
    cloudwatch = aws.client("cloudwatch")
    body = json.loads(cloudwatch.get_dashboard(DashboardName=f"{PREFIX}-pipeline")["DashboardBody"])
    resources = cloud.monitoring.resources
    assert resources is not None
    names = [a["AlarmName"] for a in definitions(first_run)]
    assert body == json.loads(
        json.dumps(dashboard_body(resources, "us-east-1", "123456789012", names))
    )
    # Every custom metric line a healthy run feeds has data under exactly those dimensions.
    only_on_failure = {"ApiErrors", "RecordsFailed"}
    # ApiRetries is written per entity whose requests drew a fault; which ones did depends on
    # the concurrent order of the requests (the faults are drawn in request order)
    retried = {
        document["Entity"]
        for documents in emf_lines("ApiRetries").values()
        for document in documents
    }
    assert retried  # the flaky API injected faults (test_metrics_equal_the_run_s_counts)
    start = cloud.monitoring.started_at
    for namespace, metric, dimensions, _ in metric_lines(body):
        if namespace != NAMESPACE or metric in only_on_failure:
            continue
        if metric == "ApiRetries" and dimensions["Entity"] not in retried:
            continue
        if metric == "RecordsQuarantined" and dimensions.get("Step") == "load":
            continue
        response = cloudwatch.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "q",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": metric,
                            "Dimensions": dimension_list(dimensions),
                        },
                        "Period": 3600,
                        "Stat": "SampleCount",
                    },
                }
            ],
            StartTime=start - timedelta(minutes=1),
            EndTime=datetime.now(UTC) + timedelta(minutes=1),
        )
        assert response["MetricDataResults"][0]["Values"], (metric, dimensions)


# -- structured logs ----------------------------------------------------------------------------


def test_logs_are_json_and_correlate_pages_with_stored_records(
    cloud: LocalCloud, first_run: FirstRun
) -> None:
    run_id = first_run.report.run_id
    lines = [json.loads(line) for line in cloud.log_path.read_text().splitlines()]
    assert lines
    for line in lines:
        assert {"level", "message", "timestamp", "service"} <= set(line)
    published = {
        line["page_id"]: line
        for line in lines
        if line["message"] == "page published" and line.get("run_id") == run_id
    }
    assert len(published) == 9
    for page_id, line in published.items():
        assert re.fullmatch(rf"{re.escape(run_id)}/{line['entity']}/p\d+", page_id)
        assert line["step"] == "ingest"
    written: dict[str, int] = {}
    for line in lines:
        if line["message"] != "batch loaded":
            continue
        assert line["step"] == "load"
        for page_id, counts in line["pages"].items():
            if page_id.startswith(f"{run_id}/"):
                assert page_id in published
                written[page_id] = written.get(page_id, 0) + counts.get("written.dynamodb", 0)
    assert written == {page_id: line["items"] for page_id, line in published.items()}
    text = cloud.log_path.read_text()
    emails = [row["email"] for row in cloud.stored_items("dynamodb", "users")]
    assert emails
    assert not any(email in text for email in emails), "a payload field reached the logs"


# -- clouds of their own ------------------------------------------------------------------------


def test_a_broken_load_with_poison_records_raises_its_alarms(tmp_path: Path) -> None:
    """The load function crashes on every batch (chaos `consumer-crash`: it dies after writing
    part of its batch) and the API serves poison: records are lost and quarantined, the
    reconcile function fails the run, and its outcome metrics say so."""
    faults = FaultInjector({"poison": 0.15}, seed=2)
    chaos = Chaos({"consumer-crash": 1.0}, seed=2, fake_api=False)
    with (
        FakeApiServer(records=20, seed=2, faults=faults) as api,
        LocalCloud(
            tmp_path / "state",
            api_url=api.url,
            chaos=chaos,
            extra_env={**FAST_RETRIES, "PIPELINE_TRIGGER_RETRY_ATTEMPTS": "1"},
        ) as local,
    ):
        report = local.run()
        sources = {
            metric: set(emf_lines(metric))
            for metric in ("RunSucceeded", "RunFailed", "ReconciliationDifference")
        }
        [outcome] = emf_lines("RunFailed")[RECONCILE_LOG_GROUP]

    assert sources == {metric: {RECONCILE_LOG_GROUP} for metric in sources}
    assert (outcome["RunSucceeded"], outcome["RunFailed"]) == ([0.0], [1.0])
    assert report.reconcile is not None
    assert report.reconcile["runs"] == {report.run_id: "failed"}
    assert report.reconcile["last_success_at"] is None
    assert report.event is None
    missing = sum(c.get("missing", 0) for c in report.entities.values())
    lost = sum(
        c["fetched"] - c["quarantined"] - min(c["stored"].values())
        for c in report.entities.values()
    )
    assert missing == lost > 0
    quarantined = sum(c["quarantined"] for c in report.entities.values())
    assert report.status == "failed"
    poisoned = sum(
        faults.is_poisoned(e, i) for e in ("users", "tracks", "listen_history") for i in range(20)
    )
    assert quarantined == poisoned > 0  # the API counts page 1 twice: it is read again at the end
    assert report.metrics["RecordsQuarantined"] == quarantined
    assert report.metrics["QuarantineBacklog"] == quarantined
    assert report.metrics["ReconciliationDifference"] == missing
    assert report.metrics["RunFailed"] == 1
    assert "Freshness" not in report.metrics  # never succeeded: its age is unknown
    for slug in (
        "quarantine-not-empty",
        "reconciliation-mismatch",
        "run-failed",
        "load-errors",
        "pipeline-stale",
    ):
        assert report.alarms[alarm_name(slug)] == "ALARM", slug
    assert report.alarms[alarm_name("ingest-errors")] == "OK"


def test_a_source_that_breaks_the_contract_everywhere_raises_the_quality_gate(
    tmp_path: Path,
) -> None:
    """Every item renames a field (the fake API's `renamed-field`): all quarantined, the run
    fails its quality gate, and the gate's own alarm fires, not only the generic ones."""
    faults = FaultInjector({"renamed-field": 1.0}, seed=2)
    with (
        FakeApiServer(records=20, seed=2, faults=faults) as api,
        LocalCloud(tmp_path / "state", api_url=api.url, extra_env=FAST_RETRIES) as local,
    ):
        report = local.run()

    assert report.status == "failed"
    assert report.metrics["QualityGateFailed"] == 3
    assert report.alarms[alarm_name("quality-gate")] == "ALARM"
    assert report.alarms[alarm_name("run-failed")] == "ALARM"
    assert report.alarms[alarm_name("reconciliation-mismatch")] == "OK"  # it balances


def test_an_api_outage_raises_ingest_errors(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with LocalCloud(
        tmp_path / "state",
        api_url=down,
        extra_env={**FAST_RETRIES, "PIPELINE_MAX_RETRIES": "1"},
    ) as local:
        report = local.run()
        resources = local.monitoring.resources
        assert resources is not None
        retries = retries_by_status(local, resources.entities)

    assert report.status == "failed"
    # one per resource and invocation: Lambda retries a failed asynchronous invocation twice
    assert report.ingest_invocations == 3
    assert report.metrics["ApiErrors"] == 3 * report.ingest_invocations
    assert report.metrics["ApiRetries"] == 3 * report.ingest_invocations  # one retry each
    assert retries == {"connection": 3.0 * report.ingest_invocations}
    assert report.alarms[alarm_name("ingest-errors")] == "ALARM"
    assert report.alarms[alarm_name("run-failed")] == "ALARM"
    assert report.alarms[alarm_name("load-errors")] == "OK"


def test_a_work_item_that_keeps_failing_is_dead_lettered_and_alarmed(tmp_path: Path) -> None:
    """A page of one fanned-out range answers 503 to every try: its work item fails on each
    delivery, SQS moves it to the dead-letter queue after 3, and the run does not succeed."""
    rows = odd_rows(seed=4)  # 1001 users: 11 pages of 100, ranges 1-4, 5-8, 9-end
    script = {("users", 6): [UNAVAILABLE] * 40}
    with (
        ContractServer(rows, script) as api,
        LocalCloud(
            tmp_path / "state",
            api_url=api.url,
            extra_env={
                "PIPELINE_BACKOFF_FACTOR_S": "0",
                "PIPELINE_MAX_RETRIES": "1",
                "PIPELINE_PAGES_PER_WORKER": "4",
            },
        ) as local,
    ):
        report = local.run()
        manifest = wiring.manifests(local.settings).get(report.run_id) or {}
        assert local.provisioned is not None
        dead = aws.client("sqs").receive_message(
            QueueUrl=local.provisioned.work_dead_letter_queue_url, MaxNumberOfMessages=10
        )["Messages"]

    assert report.status == "failed"
    assert any("dead-letter" in error for error in report.errors), report.errors
    assert [orjson.loads(message["Body"])["first_page"] for message in dead] == [5]
    assert manifest["work_items.users"] == 3
    assert manifest["work_done.users"] == 2  # the other ranges were published and counted
    assert manifest["work_done.tracks"] == manifest["work_items.tracks"] == 3
    assert manifest["ingest_status"] == "fanned_out"  # never published: the run cannot balance
    assert report.metrics["ApiErrors"] == 3  # one per delivery of the failing item
    assert report.alarms[alarm_name("ingest-worker-errors")] == "ALARM"
    assert report.alarms[alarm_name("ingest-work-dlq")] == "ALARM"
    assert report.alarms[alarm_name("run-failed")] == "ALARM"
    assert report.alarms[alarm_name("ingest-errors")] == "OK"


def retries_by_status(local: LocalCloud, entities: tuple[str, ...]) -> dict[str, float]:
    found: dict[str, float] = {}
    cloudwatch = aws.client("cloudwatch")
    for status in ("connection", "timeout", "429", "503"):
        queries = [
            {
                "Id": f"e{index}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": NAMESPACE,
                        "MetricName": "ApiRetries",
                        "Dimensions": dimension_list(
                            {"Pipeline": PREFIX, "Entity": entity, "Status": status}
                        ),
                    },
                    "Period": 3600,
                    "Stat": "Sum",
                },
            }
            for index, entity in enumerate(entities)
        ]
        response = cloudwatch.get_metric_data(
            MetricDataQueries=queries,
            StartTime=local.monitoring.started_at - timedelta(minutes=1),
            EndTime=datetime.now(UTC) + timedelta(minutes=1),
        )
        value = sum(sum(r["Values"]) for r in response["MetricDataResults"])
        if value:
            found[status] = value
    return found
