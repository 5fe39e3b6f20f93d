"""What CloudWatch Logs does with EMF lines in AWS, done for the local cloud.

In Lambda, the handlers' EMF lines go to CloudWatch Logs, which extracts the metrics. Nothing
reads logs locally, so the bridge takes the EMF lines the handlers write (it replaces
`chalicelib.observability.metrics.metrics.output`), keeps them in `emf.jsonl`, puts each into
the log group
of the function whose invocation wrote it (`/aws/lambda/<function>` in the emulator's
CloudWatch Logs, so that who wrote a metric can be read back) and publishes the same metrics,
names, units and dimension sets, with `PutMetricData`.

moto keeps every value it receives as a separate datum and scans them all for each query, so
the bridge sends each metric as a statistic set per second (sum, minimum, maximum, count):
CloudWatch stores no finer than that, and the sums, extremes and averages are unchanged.
Percentiles are the exception (moto cannot compute them): `read_emf_archive` reads them back from
`emf.jsonl`, as CloudWatch Logs Insights would from the log group.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra import names

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...], str, int]
"""(namespace, metric, dimensions, unit, epoch second)."""
SeriesId = tuple[str, str, tuple[tuple[str, str], ...]]
"""(namespace, metric, sorted dimension pairs)."""


@dataclass
class StatisticSet:
    """Sum, extremes and count of values: what `PutMetricData` accepts as `StatisticValues`."""

    total: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    count: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self.count += 1

    def as_statistic_values(self) -> dict[str, float]:
        return {
            "SampleCount": float(self.count),
            "Sum": self.total,
            "Minimum": self.minimum,
            "Maximum": self.maximum,
        }


@dataclass
class MetricAccumulator:
    """Values grouped by series and second, turned into `PutMetricData` calls."""

    series: dict[SeriesKey, StatisticSet] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        namespace: str,
        metric: str,
        dimensions: dict[str, str],
        unit: str,
        moment: datetime,
        values: list[float],
    ) -> None:
        key: SeriesKey = (
            namespace,
            metric,
            tuple(sorted(dimensions.items())),
            unit,
            int(moment.timestamp()),
        )
        with self.lock:
            statistics = self.series.setdefault(key, StatisticSet())
            for value in values:
                statistics.add(value)

    def publish(self, cloudwatch: Any, batch: int = 500) -> int:
        """Send everything accumulated; returns the number of datums sent."""
        with self.lock:
            series, self.series = self.series, {}
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for (namespace, metric, dimensions, unit, second), statistics in series.items():
            if not statistics.count:
                continue
            by_namespace.setdefault(namespace, []).append(
                {
                    "MetricName": metric,
                    "Dimensions": dimension_list(dict(dimensions)),
                    "Timestamp": datetime.fromtimestamp(second, UTC),
                    "StatisticValues": statistics.as_statistic_values(),
                    "Unit": unit,
                }
            )
        sent = 0
        for namespace, datums in by_namespace.items():
            for start in range(0, len(datums), batch):
                cloudwatch.put_metric_data(
                    Namespace=namespace, MetricData=datums[start : start + batch]
                )
                sent += len(datums[start : start + batch])
        return sent


class EmfBridge:
    """Receives EMF lines, archives them, publishes their metrics to CloudWatch on demand."""

    def __init__(self, cloudwatch: Any, archive: Path, logs: Any = None) -> None:
        self.cloudwatch = cloudwatch
        self.archive = archive
        self.logs = logs
        self.accumulator = MetricAccumulator()
        self._lock = threading.Lock()
        self._invocation = threading.local()
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._stream = f"localcloud/{uuid.uuid4().hex}"
        self._streams: set[str] = set()
        self.lines = 0

    @contextlib.contextmanager
    def invoking(self, function_name: str) -> Iterator[None]:
        """Lines written in this thread meanwhile belong to `function_name`'s log group."""
        previous = getattr(self._invocation, "function", None)
        self._invocation.function = function_name
        try:
            yield
        finally:
            self._invocation.function = previous

    def capture(self, line: str) -> None:
        """The `output` of `chalicelib.observability.metrics`: one EMF document per line."""
        document = json.loads(line)
        for metric in emf_metrics(document):
            self.accumulator.add(*metric)
        function = getattr(self._invocation, "function", None)
        with self._lock:
            self.lines += 1
            with self.archive.open("a", encoding="utf-8") as handle:
                handle.write(line.rstrip("\n") + "\n")
            if function is not None and self.logs is not None:
                self._pending.setdefault(names.log_group(function), []).append(
                    {"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")}
                )

    def publish(self) -> int:
        self._publish_logs()
        return self.accumulator.publish(self.cloudwatch)

    def _publish_logs(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for group, events in pending.items():
            if group not in self._streams:
                with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                    self.logs.create_log_group(logGroupName=group)
                with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                    self.logs.create_log_stream(logGroupName=group, logStreamName=self._stream)
                self._streams.add(group)
            for start in range(0, len(events), 1000):
                self.logs.put_log_events(
                    logGroupName=group,
                    logStreamName=self._stream,
                    logEvents=events[start : start + 1000],
                )


def dimension_list(dimensions: dict[str, str]) -> list[dict[str, str]]:
    """Dimensions in the API's shape, sorted by name.

    Always send dimensions in one order: moto matches a query's dimensions to a datum's by
    comparing `sorted()` lists of objects whose ordering is broken, which only works when both
    lists come in the same order.
    """
    return [{"Name": name, "Value": value} for name, value in sorted(dimensions.items())]


def emf_metrics(
    document: dict[str, Any],
) -> Iterator[tuple[str, str, dict[str, str], str, datetime, list[float]]]:
    """(namespace, metric, dimensions, unit, timestamp, values) per metric and dimension set.

    This is the EMF specification's extraction: each directive names a namespace, dimension
    sets (lists of keys whose values are top-level members) and metric definitions (whose
    values, a number or a list, are top-level members).
    """
    aws = document["_aws"]
    moment = datetime.fromtimestamp(aws["Timestamp"] / 1000.0, UTC)
    for directive in aws["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            dimensions = {name: str(document[name]) for name in dimension_set}
            for definition in directive["Metrics"]:
                raw = document[definition["Name"]]
                values = [float(v) for v in raw] if isinstance(raw, list) else [float(raw)]
                yield (
                    directive["Namespace"],
                    definition["Name"],
                    dimensions,
                    definition.get("Unit", "None"),
                    moment,
                    values,
                )


def read_emf_archive(archive: Path) -> dict[SeriesId, list[tuple[datetime, float]]]:
    """Every raw value of every series in an EMF archive, for statistics moto cannot compute."""
    found: dict[SeriesId, list[tuple[datetime, float]]] = {}
    if not archive.exists():
        return found
    with archive.open(encoding="utf-8") as handle:
        for line in handle:
            for namespace, metric, dimensions, _unit, moment, values in emf_metrics(
                json.loads(line)
            ):
                key = (namespace, metric, tuple(sorted(dimensions.items())))
                found.setdefault(key, []).extend((moment, value) for value in values)
    return found
