"""Monitoring of the local cloud: the same alarms and dashboard as AWS, and metrics that get there.

The deploy (`infra.deploy`, run by `localcloud/deployment.py`) has put the stage's alarms and
dashboard into moto. `LocalMonitoring` routes the handlers' EMF lines through the bridge (as
CloudWatch Logs does), wraps the handlers to record what Lambda itself would publish,
and after each run publishes everything, evaluates the alarms (moto does not), and reads the
run's metrics back with `GetMetricData`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chalicelib.aws import clients as aws
from chalicelib.observability.catalogue import CATALOGUE, NAMESPACE, PIPELINE, MetricSpec
from chalicelib.observability.metrics import metrics
from chalicelib.settings import Settings
from infra.stage import StageResources
from localcloud.monitoring.alarm_evaluator import evaluate_alarms
from localcloud.monitoring.emf_extraction import EmfBridge, dimension_list
from localcloud.monitoring.service_metrics import ServiceMetrics
from localcloud.triggers.lambda_runtime import Handler

STEPS = ("ingest", "load")


@dataclass(frozen=True)
class RunWindow:
    """When a run started and ended: its metrics are the datapoints in between."""

    start: datetime
    end: datetime


class LocalMonitoring:
    """Owns the monitoring side of one `LocalCloud`."""

    def __init__(self, state_dir: Path, stage: str = "local") -> None:
        self.state_dir = state_dir
        self.stage = stage
        self.emf_archive = state_dir / "emf.jsonl"
        self.resources: StageResources | None = None
        self.bridge: EmfBridge | None = None
        self.service: ServiceMetrics | None = None
        self.started_at = datetime.now(UTC)
        self._previous_output: Callable[[str], None] | None = None
        self._last_end: datetime | None = None

    def start(self, settings: Settings) -> None:
        self.resources = StageResources.from_settings(settings, self.stage)
        self.bridge = EmfBridge(aws.client("cloudwatch"), self.emf_archive, aws.client("logs"))
        self.service = ServiceMetrics(self.resources)
        metrics.clear_metrics()  # values recorded before this cloud existed are not its own
        self._previous_output = metrics.output
        metrics.output = self.bridge.capture

    def stop(self) -> None:
        if self._previous_output is not None:
            metrics.flush_metrics()
            metrics.output = self._previous_output
            self._previous_output = None

    def instrument(self, function: str, handler: Handler) -> Handler:
        """The handler as Lambda runs it: service metrics, and its EMF lines in its log group."""
        assert self.service is not None
        assert self.resources is not None
        bridge = self.bridge
        name = self.resources.functions[function]
        instrumented = self.service.instrument(function, handler)

        def invoke(event: Any, context: Any) -> Any:
            assert bridge is not None
            with bridge.invoking(name):
                return instrumented(event, context)

        return invoke

    def begin_run(self) -> datetime:
        """The start of a run's window, in a second no earlier run wrote metrics in."""
        now = datetime.now(UTC)
        if self._last_end is not None and int(now.timestamp()) <= int(self._last_end.timestamp()):
            time.sleep(math.floor(self._last_end.timestamp()) + 1 - now.timestamp())
            now = datetime.now(UTC)
        return now

    def end_run(self, started: datetime) -> tuple[dict[str, float], dict[str, str]]:
        """Publish the run's metrics, evaluate the alarms; returns (metrics, alarm states)."""
        self.publish()
        now = datetime.now(UTC)
        self._last_end = now
        window = RunWindow(started, now + timedelta(seconds=1))  # moto truncates to seconds
        return self.read_metrics(window), self.evaluate()

    def publish(self) -> None:
        assert self.bridge is not None
        assert self.service is not None
        metrics.flush_metrics()
        self.bridge.publish()
        self.service.publish(aws.client("cloudwatch"), aws.client("sqs"))

    def evaluate(self, now: datetime | None = None) -> dict[str, str]:
        """Evaluate every alarm of the stage as of `now`; returns {alarm name: state}."""
        assert self.resources is not None
        evaluations = evaluate_alarms(
            aws.client("cloudwatch"), self.resources.alarm_name(""), now=now
        )
        return {name: evaluation.state for name, evaluation in sorted(evaluations.items())}

    def read_metrics(self, window: RunWindow) -> dict[str, float]:
        """{metric: value over the window} for every catalogued metric with data.

        Counts and durations are summed over the entities (and sinks, steps); latencies and
        gauges (`summary` Maximum) give their maximum.
        """
        assert self.resources is not None
        queries: list[dict[str, Any]] = []
        owners: dict[str, MetricSpec] = {}
        period = max(60, math.ceil((window.end - window.start).total_seconds() / 60) * 60 + 60)
        for spec in CATALOGUE.values():
            for dimensions in self._dimension_values(spec):
                query_id = f"q{len(queries)}"
                owners[query_id] = spec
                queries.append(
                    {
                        "Id": query_id,
                        "MetricStat": {
                            "Metric": {
                                "Namespace": NAMESPACE,
                                "MetricName": spec.name,
                                "Dimensions": dimension_list(dimensions),
                            },
                            "Period": period,
                            "Stat": spec.summary,
                        },
                    }
                )
        totals: dict[str, float] = {}
        cloudwatch = aws.client("cloudwatch")
        for start in range(0, len(queries), 500):
            response = cloudwatch.get_metric_data(
                MetricDataQueries=queries[start : start + 500],
                StartTime=window.start,
                EndTime=window.end,
            )
            for result in response["MetricDataResults"]:
                if not result["Values"]:
                    continue
                spec = owners[result["Id"]]
                if spec.summary == "Maximum":
                    value = max(result["Values"])
                    totals[spec.name] = max(totals.get(spec.name, value), value)
                else:
                    totals[spec.name] = totals.get(spec.name, 0.0) + sum(result["Values"])
        return {name: round(value, 3) for name, value in sorted(totals.items())}

    def _dimension_values(self, spec: MetricSpec) -> list[dict[str, str]]:
        """The dimension values to query so that each value is counted exactly once.

        A `[Pipeline]` roll-up covers everything at once; otherwise the set with the fewest
        dimensions is expanded over the stage's entities, sinks and steps.
        """
        assert self.resources is not None
        chosen = min(spec.dimension_sets, key=len)
        choices: dict[str, tuple[str, ...]] = {
            PIPELINE: (self.resources.prefix,),
            "Entity": self.resources.entities,
            "Sink": self.resources.sinks,
            "Step": STEPS,
        }
        combinations: list[dict[str, str]] = [{}]
        for dimension in chosen:
            combinations = [
                {**partial, dimension: value}
                for partial in combinations
                for value in choices[dimension]
            ]
        return combinations
