"""The local cloud's stand-ins for CloudWatch Logs (EMF -> metrics) and for alarm evaluation."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.observability.catalogue import NAMESPACE
from chalicelib.observability.emf import PipelineMetrics
from chalicelib.settings import get_settings
from localcloud.monitoring.alarm_evaluator import evaluate_alarms
from localcloud.monitoring.emf_extraction import EmfBridge, dimension_list, read_emf_archive

_unique = itertools.count()


def cloudwatch():  # type: ignore[no-untyped-def]
    return boto3.client("cloudwatch")


def total(client, metric: str, dimensions: dict[str, str], stat: str = "Sum") -> float | None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    response = client.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {
                        "Namespace": NAMESPACE,
                        "MetricName": metric,
                        "Dimensions": dimension_list(dimensions),
                    },
                    "Period": 3600,
                    "Stat": stat,
                },
            }
        ],
        StartTime=now - timedelta(minutes=30),
        EndTime=now + timedelta(minutes=30),
    )
    values = response["MetricDataResults"][0]["Values"]
    return values[0] if values else None


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=4),
    latencies=st.lists(st.floats(min_value=0, max_value=1e5), min_size=1, max_size=250),
)
def test_emf_values_reach_cloudwatch_per_dimension_set(
    aws_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    counts: list[int],
    latencies: list[float],
) -> None:
    pipeline = f"bridge-{next(_unique)}"
    monkeypatch.setenv("PIPELINE_TABLE_PREFIX", pipeline)
    get_settings.cache_clear()
    client = cloudwatch()
    bridge = EmfBridge(client, tmp_path / f"{pipeline}.jsonl")
    recorder = PipelineMetrics()
    recorder.output = bridge.capture
    for count in counts:
        recorder.add_metric("RecordsQuarantined", count, Entity="users", Step="load")
    recorder.add_values("EndToEndLatency", latencies, Entity="tracks", Sink="dynamodb")
    recorder.flush_metrics()
    bridge.publish()
    get_settings.cache_clear()

    full = {"Pipeline": pipeline, "Entity": "users", "Step": "load"}
    assert total(client, "RecordsQuarantined", full) == sum(counts)
    assert total(client, "RecordsQuarantined", {"Pipeline": pipeline}) == sum(counts)
    latency = {"Pipeline": pipeline, "Entity": "tracks", "Sink": "dynamodb"}
    assert total(client, "EndToEndLatency", latency, "SampleCount") == len(latencies)
    assert total(client, "EndToEndLatency", latency, "Maximum") == pytest.approx(max(latencies))
    assert total(client, "EndToEndLatency", latency, "Sum") == pytest.approx(sum(latencies))
    archived = read_emf_archive(tmp_path / f"{pipeline}.jsonl")
    key = (NAMESPACE, "EndToEndLatency", tuple(sorted(latency.items())))
    assert [value for _, value in archived[key]] == pytest.approx(latencies)


def test_the_archive_keeps_every_emf_line(aws_env: str, tmp_path: Path) -> None:
    bridge = EmfBridge(cloudwatch(), tmp_path / "emf.jsonl")
    recorder = PipelineMetrics()
    recorder.output = bridge.capture
    recorder.add_metric("RecordsFetched", 3, Entity="users")
    recorder.add_metric("RecordsFetched", 4, Entity="tracks")
    recorder.flush_metrics()
    lines = (tmp_path / "emf.jsonl").read_text().splitlines()
    assert bridge.lines == len(lines) == 2
    assert sorted(json.loads(line)["RecordsFetched"][0] for line in lines) == [3.0, 4.0]


# -- the alarm evaluator ------------------------------------------------------------------------


def put_alarm(client, name: str, metric: str, **options) -> None:  # type: ignore[no-untyped-def]
    arguments = {
        "AlarmName": name,
        "Namespace": "Test/Evaluator",
        "MetricName": metric,
        "Dimensions": [{"Name": "Case", "Value": name}],
        "Statistic": "Sum",
        "Period": 300,
        "EvaluationPeriods": 1,
        "Threshold": 0.0,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        "AlarmActions": [],
    }
    arguments.update(options)
    client.put_metric_alarm(**arguments)


def put_value(client, name: str, metric: str, value: float, at: datetime) -> None:  # type: ignore[no-untyped-def]
    client.put_metric_data(
        Namespace="Test/Evaluator",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": "Case", "Value": name}],
                "Timestamp": at,
                "Value": value,
            }
        ],
    )


def state(client, name: str) -> str:  # type: ignore[no-untyped-def]
    return client.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    series=st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=1, max_size=6),
    required=st.integers(1, 6),
    missing=st.sampled_from(["breaching", "notBreaching", "missing"]),
)
def test_the_evaluator_applies_threshold_periods_and_missing_data(
    aws_env: str, series: list[int | None], required: int, missing: str
) -> None:
    client = cloudwatch()
    name = f"case-{next(_unique)}"
    required = min(required, len(series))
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    put_alarm(
        client,
        name,
        "Things",
        EvaluationPeriods=len(series),
        DatapointsToAlarm=required,
        TreatMissingData=missing,
    )
    for index, value in enumerate(series):  # oldest first; each inside its own period
        if value is not None:
            at = now - timedelta(seconds=300 * (len(series) - index) - 150)
            put_value(client, name, "Things", value, at)

    result = evaluate_alarms(client, name, now=now)[name]

    breaching = sum(
        1 if value is None and missing == "breaching" else int(value is not None and value > 0)
        for value in series
    )
    considered = sum(value is not None or missing != "missing" for value in series)
    expected = "ALARM" if breaching >= required else ("OK" if considered else "INSUFFICIENT_DATA")
    assert result.state == expected
    assert state(client, name) == expected


def test_ignore_keeps_the_state_when_nothing_was_measured(aws_env: str) -> None:
    client = cloudwatch()
    name = f"ignore-{next(_unique)}"
    put_alarm(client, name, "Backlog", Statistic="Maximum", TreatMissingData="ignore")
    now = datetime.now(UTC)
    put_value(client, name, "Backlog", 4, now - timedelta(seconds=10))
    evaluate_alarms(client, name, now=now)
    assert state(client, name) == "ALARM"
    evaluate_alarms(client, name, now=now + timedelta(hours=3))  # no measurement since
    assert state(client, name) == "ALARM"
    put_value(client, name, "Backlog", 0, now + timedelta(hours=4))
    evaluate_alarms(client, name, now=now + timedelta(hours=4, seconds=10))
    assert state(client, name) == "OK"


def test_metric_math_sum_of_metrics(aws_env: str) -> None:
    client = cloudwatch()
    name = f"math-{next(_unique)}"
    client.put_metric_alarm(
        AlarmName=name,
        Metrics=[
            *[
                {
                    "Id": f"m{i}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "Test/Evaluator",
                            "MetricName": f"Part{i}",
                            "Dimensions": [{"Name": "Case", "Value": name}],
                        },
                        "Period": 300,
                        "Stat": "Sum",
                    },
                    "ReturnData": False,
                }
                for i in range(2)
            ],
            {"Id": "total", "Expression": "SUM(METRICS())", "ReturnData": True},
        ],
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )
    now = datetime.now(UTC)
    put_value(client, name, "Part0", 3, now - timedelta(seconds=20))
    assert evaluate_alarms(client, name, now=now)[name].state == "OK"
    put_value(client, name, "Part1", 3, now - timedelta(seconds=10))
    assert evaluate_alarms(client, name, now=now)[name].state == "ALARM"
