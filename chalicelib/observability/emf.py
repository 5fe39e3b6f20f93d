"""The EMF provider: metric values collected per dimension set, written as EMF lines.

Lambda ships every stdout line to CloudWatch Logs, which turns Embedded Metric Format lines
into metrics: no PutMetricData call on the hot path, no extra IAM permission, no latency.
Values collect in memory during an invocation and are written when the handler returns
(`@metrics.log_metrics`, the Powertools decorator), one EMF line per dimension set.

Powertools' `Metrics` keeps ONE dimension set per process; per-entity dimensions need one EMF
blob per dimension set, so this module has a small provider (Powertools `BaseProvider`, so
`log_metrics` works as usual) that groups values by dimension set and lets Powertools'
`AmazonCloudWatchEMFProvider` serialize and validate each blob.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from aws_lambda_powertools.metrics.provider import BaseProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from chalicelib.observability.catalogue import CATALOGUE, NAMESPACE, PIPELINE
from chalicelib.settings import get_settings

MAX_VALUES_PER_BLOB: Final = 99
"""EMF allows 100 values per metric; Powertools prints on its own at 100, so stay below."""


_BlobKey = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, ...], ...]]
"""(dimension name/value pairs, roll-up dimension sets): the values that share one EMF blob."""


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class PipelineMetrics(BaseProvider):
    """Collects metric values by dimension set and writes them as EMF lines on flush.

    Thread-safe: the ingest function records API retries from its fetch threads. `output`
    receives each EMF line (stdout by default, which Lambda forwards to CloudWatch Logs).
    """

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self.output: Callable[[str], None] = _print_line
        self._lock = threading.Lock()
        self._pending: dict[_BlobKey, dict[str, list[float]]] = {}

    def add_metric(self, name: str, value: float, **dimensions: str) -> None:
        """Record one value of a catalogued metric; the `Pipeline` dimension is added here."""
        self.add_values(name, [value], **dimensions)

    def add_values(self, name: str, values: Iterable[float], **dimensions: str) -> None:
        spec = CATALOGUE.get(name)
        if spec is None:
            raise ValueError(
                f"metric {name!r} is not in chalicelib.observability.catalogue.CATALOGUE"
            )
        labelled = {PIPELINE: get_settings().table_prefix, **dimensions}
        if set(labelled) != set(spec.dimensions):
            raise ValueError(
                f"metric {name} takes dimensions {spec.dimensions}, got {sorted(labelled)}"
            )
        key: _BlobKey = (
            tuple((dimension, str(labelled[dimension])) for dimension in spec.dimensions),
            spec.dimension_sets[1:],
        )
        numbers = [float(value) for value in values]
        if not numbers:
            return
        with self._lock:
            metrics = self._pending.setdefault(key, {})
            current = metrics.setdefault(name, [])
            if spec.distribution:
                current.extend(numbers)
            elif current:
                current[0] += sum(numbers)
            else:
                current.append(sum(numbers))

    def serialize_metric_set(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """The EMF documents of everything pending, without clearing it."""
        with self._lock:
            pending = {key: {n: list(v) for n, v in m.items()} for key, m in self._pending.items()}
        return [blob for key, metrics in pending.items() for blob in self._blobs(key, metrics)]

    def flush_metrics(self, raise_on_empty_metrics: bool = False, **kwargs: Any) -> None:
        """Write every pending value as EMF lines and forget them."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if raise_on_empty_metrics and not pending:
            raise ValueError("no metrics were recorded")
        for key, metrics in pending.items():
            for blob in self._blobs(key, metrics):
                self.output(json.dumps(blob, separators=(",", ":")))

    def clear_metrics(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._pending = {}

    def add_cold_start_metric(self, context: Any) -> None:
        """Not used: Lambda's own `Invocations` and `InitDuration` tell cold starts apart."""

    def _blobs(self, key: _BlobKey, metrics: Mapping[str, list[float]]) -> list[dict[str, Any]]:
        """One EMF document per slice of at most `MAX_VALUES_PER_BLOB` values per metric."""
        dimensions, rollups = key
        longest = max(len(values) for values in metrics.values())
        labels = dict(dimensions)
        blobs: list[dict[str, Any]] = []
        for start in range(0, longest, MAX_VALUES_PER_BLOB):
            emf = AmazonCloudWatchEMFProvider(namespace=self.namespace, service="")
            for dimension, label in dimensions:
                emf.add_dimension(dimension, label)
            for rollup in rollups:
                emf.add_dimensions(**{dimension: labels[dimension] for dimension in rollup})
            # The metric set in Powertools' own shape, built at once: its `add_metric` formats
            # the growing value list into a debug message on every call (quadratic).
            metric_set = {
                name: {
                    "Unit": CATALOGUE[name].unit.value,
                    "StorageResolution": 60,
                    "Value": values[start : start + MAX_VALUES_PER_BLOB],
                }
                for name, values in metrics.items()
                if values[start : start + MAX_VALUES_PER_BLOB]
            }
            blobs.append(
                dict(
                    emf.serialize_metric_set(
                        metrics=metric_set, dimensions=emf.dimension_set, metadata={}
                    )
                )
            )
        return blobs
