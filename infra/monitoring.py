"""Create-or-update a stage's monitoring: SNS topic, alarms and dashboard.

`apply_monitoring` applies the definitions of `infra.alarms` and `infra.dashboard` with boto3
against any endpoint (AWS, LocalStack, the local cloud's moto); `cloudformation_resources`
renders the very same definitions as CloudFormation resources. Both are idempotent: alarm and
dashboard names are fixed per stage, and `PutMetricAlarm` / `PutDashboard` / `CreateTopic`
overwrite what exists.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import clients as aws
from chalicelib.settings import Settings
from infra import names
from infra.alarms import AlarmThresholds, alarm_definitions
from infra.dashboard import dashboard_body
from infra.resources import Change
from infra.stage import StageResources


@dataclass
class MonitoringApplied:
    topic_arn: str
    dashboard: str
    alarms: list[str] = field(default_factory=list)


def apply_monitoring(
    settings: Settings, stage: str, thresholds: AlarmThresholds | None = None
) -> MonitoringApplied:
    """Create the alarm topic, put every alarm and the dashboard of `stage`."""
    resources = StageResources.from_settings(settings, stage)
    topic_arn = str(aws.client("sns").create_topic(Name=resources.alarm_topic)["TopicArn"])
    _, _, _, region, account_id, _ = topic_arn.split(":", 5)
    cloudwatch = aws.client("cloudwatch")
    alarms = alarm_definitions(resources, topic_arn, thresholds)
    for alarm in alarms:
        cloudwatch.put_metric_alarm(**alarm)
    names = [alarm["AlarmName"] for alarm in alarms]
    body = dashboard_body(resources, region, account_id, names, thresholds)
    cloudwatch.put_dashboard(DashboardName=resources.dashboard, DashboardBody=json.dumps(body))
    return MonitoringApplied(topic_arn=topic_arn, dashboard=resources.dashboard, alarms=names)


def remove_monitoring(settings: Settings, stage: str) -> list[Change]:
    """Delete the alarms and the dashboard of `stage` (the topic goes with the stack)."""
    resources = StageResources.from_settings(settings, stage)
    cloudwatch = aws.client("cloudwatch")
    names = [alarm["AlarmName"] for alarm in alarm_definitions(resources, "TOPIC")]
    existing = {
        alarm["AlarmName"]
        for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNames=names)
        for alarm in page.get("MetricAlarms", [])
    }
    changes = [
        Change(f"alarm {name}", "deleted" if name in existing else "absent") for name in names
    ]
    if existing:
        cloudwatch.delete_alarms(AlarmNames=sorted(existing))
    try:
        cloudwatch.delete_dashboards(DashboardNames=[resources.dashboard])
        changes.append(Change(f"dashboard {resources.dashboard}", "deleted"))
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("ResourceNotFound", "DashboardNotFoundError"):
            raise
        changes.append(Change(f"dashboard {resources.dashboard}", "absent"))
    return changes


def cloudformation_resources(
    settings: Settings, stage: str, thresholds: AlarmThresholds | None = None
) -> dict[str, Any]:
    """`Resources` of a CloudFormation template: the topic, one alarm each, the dashboard."""
    resources = StageResources.from_settings(settings, stage)
    topic = {"Ref": "AlarmTopic"}
    template: dict[str, Any] = {
        "AlarmTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"TopicName": resources.alarm_topic},
        }
    }
    alarms = alarm_definitions(resources, "TOPIC", thresholds)
    for alarm in alarms:
        properties = copy.deepcopy(alarm)
        properties["AlarmActions"] = [topic]
        properties["OKActions"] = [topic]
        template[_logical_id("Alarm", alarm["AlarmName"], resources.prefix)] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": properties,
        }
    body = dashboard_body(
        resources,
        "${AWS::Region}",
        "${AWS::AccountId}",
        [alarm["AlarmName"] for alarm in alarms],
        thresholds,
    )
    template["Dashboard"] = {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {
            "DashboardName": resources.dashboard,
            "DashboardBody": {"Fn::Sub": json.dumps(body)},
        },
    }
    return template


def _logical_id(kind: str, name: str, prefix: str) -> str:
    """`moovitamix-dev-pipeline-stale` -> `AlarmPipelineStale` (letters and digits only)."""
    slug = names.alarm_slug(prefix, name)
    return kind + "".join(part.capitalize() for part in slug.replace("_", "-").split("-"))
