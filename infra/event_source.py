"""The failure settings of the load function's Kinesis event-source mapping, in one place.

Chalice creates the mapping but cannot set its failure handling, so these values are applied
after `chalice deploy` (UpdateEventSourceMapping) and merged into packaged templates; the local
cloud reads the deployed mapping back into this object (`localcloud/deployment.py`) and its
driver (`localcloud/driver.py`) honours the same semantics.
Field names are the AWS parameter names in snake case; `as_api_parameters()` gives the exact
`CreateEventSourceMapping`/`UpdateEventSourceMapping` keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chalicelib.deadletter.failures import failure_queue_name
from chalicelib.settings import Settings

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


@dataclass(frozen=True)
class KinesisEventSourceSettings:
    """What Lambda does with a batch the load function could not process.

    The defaults bound the damage of a poison batch: at most `maximum_retry_attempts` retries
    (bisecting on function errors first, which AWS does not count as retries), records older
    than `maximum_record_age_in_seconds` are not retried either, and whatever is given up is
    described in the on-failure destination (an SQS queue) so that it can be redriven.
    """

    batch_size: int = 100
    maximum_batching_window_in_seconds: int = 5
    starting_position: str = "TRIM_HORIZON"
    parallelization_factor: int = 1
    function_response_types: tuple[str, ...] = (REPORT_BATCH_ITEM_FAILURES,)
    bisect_batch_on_function_error: bool = True
    maximum_retry_attempts: int = 10
    maximum_record_age_in_seconds: int = 6 * 3600
    on_failure_destination_arn: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, settings: Settings, on_failure_destination_arn: str | None = None, **overrides: Any
    ) -> KinesisEventSourceSettings:
        """The stage's settings, from the same `PIPELINE_*` variables the deploy applies
        (`infra/trigger.py`), so the local driver and AWS behave alike."""
        values: dict[str, Any] = {
            "batch_size": settings.batch_size,
            "maximum_batching_window_in_seconds": settings.batching_window_s,
            "bisect_batch_on_function_error": settings.trigger_bisect_on_error,
            "maximum_retry_attempts": settings.trigger_retry_attempts,
            "maximum_record_age_in_seconds": settings.trigger_max_record_age_s,
            "on_failure_destination_arn": on_failure_destination_arn,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def reports_batch_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    def as_api_parameters(self) -> dict[str, Any]:
        """Keyword arguments of UpdateEventSourceMapping (without UUID/FunctionName)."""
        parameters: dict[str, Any] = {
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.maximum_batching_window_in_seconds,
            "ParallelizationFactor": self.parallelization_factor,
            "FunctionResponseTypes": list(self.function_response_types),
            "BisectBatchOnFunctionError": self.bisect_batch_on_function_error,
            "MaximumRetryAttempts": self.maximum_retry_attempts,
            "MaximumRecordAgeInSeconds": self.maximum_record_age_in_seconds,
        }
        if self.on_failure_destination_arn:
            parameters["DestinationConfig"] = {
                "OnFailure": {"Destination": self.on_failure_destination_arn}
            }
        parameters.update(self.extra)
        return parameters


def failure_queue(settings: Settings) -> str:
    """Name of the SQS on-failure destination of the load mapping: `<prefix>-load-failures`."""
    return failure_queue_name(settings)
