"""Evaluates CloudWatch alarms for the local cloud, where moto stores alarms but never runs them.

For each alarm (as `DescribeAlarms` returns it) the evaluator reads the metric over the last
`EvaluationPeriods` periods before `now` with `GetMetricData`, marks each period breaching or
not (a missing period per `TreatMissingData`), and sets the state with `SetAlarmState` when it
changes (or was never evaluated): ALARM when at least `DatapointsToAlarm` periods breach.
This is CloudWatch's rule without its refinements (no look-back beyond the window for
`missing`/`ignore`, no evaluation delay). Metric math is supported for `SUM(METRICS())`, the
only form the alarms use.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


@dataclass(frozen=True)
class Evaluation:
    alarm: str
    state: str
    reason: str
    values: tuple[float | None, ...]


def evaluate_alarms(
    cloudwatch: Any, name_prefix: str, now: datetime | None = None
) -> dict[str, Evaluation]:
    """Evaluate every alarm whose name starts with `name_prefix`; returns the new states."""
    moment = now or datetime.now(UTC)
    results: dict[str, Evaluation] = {}
    paginator = cloudwatch.get_paginator("describe_alarms")
    for page in paginator.paginate(AlarmNamePrefix=name_prefix, AlarmTypes=["MetricAlarm"]):
        for alarm in page["MetricAlarms"]:
            evaluation = evaluate_alarm(cloudwatch, alarm, moment)
            results[alarm["AlarmName"]] = evaluation
            unchecked = alarm.get("StateReason", "").startswith("Unchecked")  # moto's initial
            if evaluation.state != alarm["StateValue"] or unchecked:
                cloudwatch.set_alarm_state(
                    AlarmName=alarm["AlarmName"],
                    StateValue=evaluation.state,
                    StateReason=evaluation.reason[:1023],
                    StateReasonData=json.dumps(
                        {
                            "version": "1.0",
                            "queryDate": moment.isoformat(),
                            "recentDatapoints": [v for v in evaluation.values if v is not None],
                            "threshold": alarm["Threshold"],
                            "evaluator": "localcloud",
                        }
                    ),
                )
    return results


def evaluate_alarm(cloudwatch: Any, alarm: dict[str, Any], now: datetime) -> Evaluation:
    periods = int(alarm["EvaluationPeriods"])
    required = int(alarm.get("DatapointsToAlarm") or periods)
    period = _period(alarm)
    # moto drops the fraction of a second of the end time: round up, so `now` is included.
    end = now.replace(microsecond=0) + timedelta(seconds=1 if now.microsecond else 0)
    start = end - timedelta(seconds=period * periods)
    values = _series(cloudwatch, alarm, start, end, period, periods)
    compare = COMPARISONS[alarm["ComparisonOperator"]]
    threshold = float(alarm["Threshold"])
    missing = alarm.get("TreatMissingData") or "missing"
    breaching = 0
    present = 0
    for value in values:
        if value is None:
            breaching += missing == "breaching"
            present += missing in ("breaching", "notBreaching")
            continue
        present += 1
        breaching += compare(value, threshold)
    shown = ", ".join("-" if v is None else f"{v:g}" for v in values)
    if breaching >= required:
        state = "ALARM"
    elif present == 0:
        state = alarm["StateValue"] if missing == "ignore" else "INSUFFICIENT_DATA"
    else:
        state = "OK"
    reason = (
        f"{breaching} of the last {periods} periods of {period} s breached "
        f"({alarm['ComparisonOperator']} {threshold:g}; needs {required}): [{shown}]; "
        f"missing data is {missing} (local evaluator)"
    )
    return Evaluation(alarm["AlarmName"], state, reason, tuple(values))


def _period(alarm: dict[str, Any]) -> int:
    if alarm.get("Period"):
        return int(alarm["Period"])
    return int(next(q["MetricStat"]["Period"] for q in alarm["Metrics"] if "MetricStat" in q))


def _series(
    cloudwatch: Any,
    alarm: dict[str, Any],
    start: datetime,
    end: datetime,
    period: int,
    periods: int,
) -> list[float | None]:
    """One value (or None when missing) per evaluation period, oldest first."""
    if "MetricName" in alarm and alarm.get("MetricName"):
        queries = [
            {
                "Id": "m0",
                "MetricStat": {
                    "Metric": {
                        "Namespace": alarm["Namespace"],
                        "MetricName": alarm["MetricName"],
                        "Dimensions": alarm.get("Dimensions", []),
                    },
                    "Period": period,
                    "Stat": alarm["Statistic"],
                },
            }
        ]
        return _combine(_query(cloudwatch, queries, start, end, period, periods), "m0")
    stats = [q for q in alarm["Metrics"] if "MetricStat" in q]
    expressions = [q for q in alarm["Metrics"] if "Expression" in q and q.get("ReturnData", True)]
    if len(expressions) != 1 or expressions[0]["Expression"].replace(" ", "") != "SUM(METRICS())":
        raise NotImplementedError(
            f"alarm {alarm['AlarmName']}: the local evaluator only computes SUM(METRICS())"
        )
    queries = [{"Id": q["Id"], "MetricStat": q["MetricStat"]} for q in stats]
    series = _query(cloudwatch, queries, start, end, period, periods)
    return _combine(series, *(q["Id"] for q in stats))


def _query(
    cloudwatch: Any,
    queries: Sequence[dict[str, Any]],
    start: datetime,
    end: datetime,
    period: int,
    periods: int,
) -> dict[str, list[float | None]]:
    response = cloudwatch.get_metric_data(
        MetricDataQueries=list(queries), StartTime=start, EndTime=end
    )
    series: dict[str, list[float | None]] = {q["Id"]: [None] * periods for q in queries}
    begin = start.replace(microsecond=0)
    for result in response["MetricDataResults"]:
        for timestamp, value in zip(result["Timestamps"], result["Values"], strict=True):
            index = int((timestamp.astimezone(UTC) - begin).total_seconds() // period)
            if 0 <= index < periods:
                series[result["Id"]][index] = float(value)
    return series


def _combine(series: dict[str, list[float | None]], *ids: str) -> list[float | None]:
    """Pointwise sum of the named series; a period is missing only if every series misses it."""
    combined: list[float | None] = []
    for column in zip(*(series[i] for i in ids), strict=True):
        present = [value for value in column if value is not None]
        combined.append(sum(present) if present else None)
    return combined
