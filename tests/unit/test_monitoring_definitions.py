"""Alarms and dashboard as code: what they reference, what they say, how they render."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.observability.catalogue import CATALOGUE, NAMESPACE
from chalicelib.settings import Settings
from infra.alarms import (
    AWS_SERVICE_METRICS,
    RUNBOOK,
    AlarmThresholds,
    alarm_definitions,
    is_emitted,
    referenced_metrics,
)
from infra.dashboard import dashboard_body, metric_lines
from infra.monitoring import cloudformation_resources
from infra.stage import StageResources, schedule_interval_s

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "arn:aws:sns:eu-west-1:111122223333:moovitamix-dev-alarms"


def resources(stage: str = "dev", **settings: str) -> StageResources:
    return StageResources.from_settings(Settings(**settings), stage)  # type: ignore[arg-type]


def operations_sections() -> dict[str, str]:
    """`## Heading` -> body of docs/operations.md."""
    text = (ROOT / RUNBOOK).read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_stage_resources_follow_chalice_and_the_agreed_names() -> None:
    stage = resources("dev")
    assert stage.functions == {
        "ingest": "moovitamix-pipeline-dev-ingest",
        "load": "moovitamix-pipeline-dev-load",
        "reconcile": "moovitamix-pipeline-dev-reconcile",
        "ingest_worker": "moovitamix-pipeline-dev-ingest_worker",
    }
    assert stage.failure_queue == "moovitamix-dev-load-failures"
    assert stage.work_queue == "moovitamix-dev-ingest-work"
    assert stage.work_dead_letter_queue == "moovitamix-dev-ingest-work-dlq"
    assert stage.alarm_topic == "moovitamix-dev-alarms"
    assert "moovitamix-dev-runs" in stage.tables


def test_every_alarm_notifies_the_topic_and_says_where_the_runbook_is() -> None:
    alarms = alarm_definitions(resources(), TOPIC)
    names = [alarm["AlarmName"] for alarm in alarms]
    assert len(names) == len(set(names))
    alarm_headings = set(re.findall(r"^### (.+)$", operations_sections()["Alarms"], re.M))
    for alarm in alarms:
        assert alarm["AlarmName"].startswith("moovitamix-dev-")
        assert alarm["AlarmActions"] == [TOPIC]
        assert alarm["OKActions"] == [TOPIC]
        anchor = re.search(rf"{re.escape(RUNBOOK)}#([a-z0-9-]+)", alarm["AlarmDescription"])
        assert anchor, alarm["AlarmName"]
        assert anchor.group(1) == alarm["AlarmName"].removeprefix("moovitamix-dev-")
        assert anchor.group(1) in alarm_headings, f"{anchor.group(1)} has no runbook section"
        assert len(alarm["AlarmDescription"]) <= 1024


def test_the_issue_s_alarms_are_all_there() -> None:
    slugs = {
        a["AlarmName"].removeprefix("moovitamix-dev-")
        for a in alarm_definitions(resources(), TOPIC)
    }
    assert slugs >= {
        "pipeline-stale",
        "reconciliation-mismatch",
        "quarantine-not-empty",
        "iterator-age",
        "ingest-errors",
        "ingest-throttles",
        "load-errors",
        "load-throttles",
        "putrecords-failures",
        "dynamodb-throttles",
        "load-failures-queue",
        # the fan-out (issue 7) and the reconcile function
        "ingest-worker-errors",
        "ingest-worker-throttles",
        "ingest-work-dlq",
        "reconcile-errors",
        "reconcile-throttles",
    }


def test_the_fan_out_is_watched() -> None:
    alarms = {
        a["AlarmName"].removeprefix("moovitamix-dev-"): a
        for a in alarm_definitions(resources(), TOPIC)
    }
    errors = alarms["ingest-worker-errors"]
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")
    assert errors["Dimensions"] == [
        {"Name": "FunctionName", "Value": "moovitamix-pipeline-dev-ingest_worker"}
    ]
    dead_letters = alarms["ingest-work-dlq"]
    assert (dead_letters["Namespace"], dead_letters["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert dead_letters["Dimensions"] == [
        {"Name": "QueueName", "Value": "moovitamix-dev-ingest-work-dlq"}
    ]
    assert dead_letters["Threshold"] == 0
    assert dead_letters["ComparisonOperator"] == "GreaterThanThreshold"
    body = dashboard_body(resources(), "eu-west-1", "111122223333", [])
    lines = {
        (metric, tuple(dimensions.values())) for _, metric, dimensions, _ in metric_lines(body)
    }
    worker = ("moovitamix-pipeline-dev-ingest_worker",)
    for metric in ("Invocations", "Errors", "Duration"):
        assert (metric, worker) in lines
    assert ("ApproximateNumberOfMessagesVisible", ("moovitamix-dev-ingest-work",)) in lines
    assert ("ApproximateNumberOfMessagesVisible", ("moovitamix-dev-ingest-work-dlq",)) in lines


def test_alarms_watch_only_metrics_that_are_emitted() -> None:
    for alarm in alarm_definitions(resources(), TOPIC):
        for namespace, metric, dimensions in referenced_metrics(alarm):
            assert is_emitted(namespace, metric, dimensions), (alarm["AlarmName"], metric)


def test_the_dashboard_references_only_metrics_the_code_emits() -> None:
    stage = resources()
    names = [a["AlarmName"] for a in alarm_definitions(stage, TOPIC)]
    body = dashboard_body(stage, "eu-west-1", "111122223333", names)
    lines = metric_lines(body)
    assert lines
    for namespace, metric, dimensions, options in lines:
        assert is_emitted(namespace, metric, tuple(sorted(dimensions))), (metric, dimensions)
        if namespace == NAMESPACE:
            assert dimensions["Pipeline"] == "moovitamix-dev"
            assert dimensions.get("Entity", "users") in stage.entities
        assert options["stat"] in ("Sum", "Maximum", "p50", "p90", "p99")
    alarm_widgets = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert [arn.rsplit(":", 1)[-1] for arn in alarm_widgets[0]["properties"]["alarms"]] == names


def test_the_dashboard_covers_the_issue_s_widgets() -> None:
    body = dashboard_body(resources(), "eu-west-1", "111122223333", [])
    shown = {metric for _, metric, _, _ in metric_lines(body)}
    assert shown >= {
        "RecordsFetched",
        "RecordsPublished",
        "RecordsWritten",
        "RecordsQuarantined",
        "EndToEndLatency",
        "GetRecords.IteratorAgeMilliseconds",
        "Freshness",
        "QuarantineBacklog",
        "ApiErrors",
        "Errors",
    }
    latency = {o["stat"] for _, m, _, o in metric_lines(body) if m == "EndToEndLatency"}
    assert latency == {"p50", "p90", "p99"}


def test_every_catalogued_metric_is_emitted_somewhere_in_the_code_and_documented() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "chalicelib").rglob("*.py"))
    # a call that writes it, not the catalogue's own entry (which names every metric)
    emitted = set(re.findall(r'metrics\.add_(?:metric|values)\(\s*"([A-Za-z]+)"', source))
    metrics_section = operations_sections()["Metrics"]
    for name in CATALOGUE:
        assert name in emitted, f"{name} is catalogued but nothing writes it"
        assert f"| `{name}` |" in metrics_section, f"{name} is not documented"
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", metrics_section, re.M))
    assert documented == set(CATALOGUE)


def test_aws_service_metrics_used_are_documented() -> None:
    metrics_section = operations_sections()["Metrics"]
    for namespace, names in AWS_SERVICE_METRICS.items():
        assert namespace in metrics_section
        for name in names:
            assert name in metrics_section


def test_dashboard_layout_fits_the_grid() -> None:
    body = dashboard_body(resources(), "eu-west-1", "1", [])
    json.dumps(body)
    for widget in body["widgets"]:
        assert widget["x"] >= 0
        assert widget["x"] + widget["width"] <= 24
    positions = [(w["x"], w["y"]) for w in body["widgets"]]
    assert len(positions) == len(set(positions))


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 day)", 86400),
        ("rate(6 hours)", 21600),
        ("rate(1 minute)", 60),
        ("cron(0 10 * * ? *)", 86400),
    ],
)
def test_schedule_intervals(expression: str, seconds: int) -> None:
    assert schedule_interval_s(expression) == seconds


def test_a_bad_schedule_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="schedule expression"):
        schedule_interval_s("every day")


@given(
    amount=st.integers(min_value=1, max_value=6),
    unit=st.sampled_from(["minutes", "hours", "days"]),
    margin=st.integers(min_value=0, max_value=6 * 3600),
)
def test_the_stale_alarm_covers_schedule_plus_margin_within_cloudwatch_limits(
    amount: int, unit: str, margin: int
) -> None:
    stage = resources(schedule=f"rate({amount} {unit})")
    window = stage.schedule_s + margin
    limits = AlarmThresholds(stale_margin_s=margin)
    if window > 7 * 86400 - 3600:
        return
    [stale] = [
        a for a in alarm_definitions(stage, TOPIC, limits) if a["AlarmName"].endswith("-stale")
    ]
    total = stale["Period"] * stale["EvaluationPeriods"]
    assert total >= window
    assert total - window < stale["Period"] + 60
    assert stale["DatapointsToAlarm"] == stale["EvaluationPeriods"]
    assert stale["TreatMissingData"] == "breaching"
    assert total <= (86400 if stale["Period"] < 3600 else 7 * 86400)


def test_cloudformation_renders_the_same_alarms_and_dashboard() -> None:
    template = cloudformation_resources(Settings(), "dev")
    alarms = {k: v for k, v in template.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    definitions = alarm_definitions(resources(), TOPIC)
    assert len(alarms) == len(definitions)
    for logical_id, alarm in alarms.items():
        assert re.fullmatch(r"[A-Za-z0-9]+", logical_id)
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert template["AlarmTopic"]["Properties"]["TopicName"] == "moovitamix-dev-alarms"
    body = template["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert "${AWS::Region}" in body
    assert "arn:aws:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:moovitamix-dev-" in body
    references = set(re.findall(r"\$\{([^}]*)\}", body))
    assert references == {"AWS::Region", "AWS::AccountId"}
