"""The Kinesis trigger's failure handling, which Chalice cannot set, in one definition.

Chalice creates the event-source mapping of the load function with a batch size and window
only. The failure settings (report partial batch failures, bisect a failing batch, a bounded
number of retries, a maximum record age, an SQS on-failure destination) and the pinned
parallelization factor of 1 are defined here once and written three ways: applied with
`UpdateEventSourceMapping` after `chalice deploy`, merged into the SAM template's Kinesis
event, and added to the Terraform event-source mapping. `infra.deploy_check` reads the
deployed mapping back and compares it with the same values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from infra.resources import Attr, Change, contains
from infra.spec import StackSpec

LOAD_FUNCTION = "load"
"""Chalice name of the function the Kinesis trigger invokes."""

_SETTLED_STATES = ("Enabled", "Disabled")

PARALLELIZATION_FACTOR = 1
"""Concurrent batches per shard. The DynamoDB sink reads a row's stored version, compares and
writes (newest wins): two batches of one shard in flight at once could both read the old row
and the older write could land last. One batch per shard at a time keeps that safe; Lambda's
default is 1 too, but a console edit or a bare `chalice deploy` must not change it unseen."""


@dataclass(frozen=True)
class FailureSettings:
    retry_attempts: int
    max_record_age_s: int
    bisect_on_error: bool
    parallelization_factor: int = PARALLELIZATION_FACTOR

    @classmethod
    def from_spec(cls, spec: StackSpec) -> FailureSettings:
        settings = spec.settings
        age = settings.trigger_max_record_age_s
        if age != -1 and not 60 <= age <= 604_800:
            raise ValueError(
                f"PIPELINE_TRIGGER_MAX_RECORD_AGE_S={age}: Lambda accepts -1 or 60..604800"
            )
        return cls(
            retry_attempts=settings.trigger_retry_attempts,
            max_record_age_s=age,
            bisect_on_error=settings.trigger_bisect_on_error,
        )

    def api_parameters(self, destination: Any) -> dict[str, Any]:
        """Parameters of `CreateEventSourceMapping`/`UpdateEventSourceMapping` (and SAM)."""
        return {
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BisectBatchOnFunctionError": self.bisect_on_error,
            "MaximumRetryAttempts": self.retry_attempts,
            "MaximumRecordAgeInSeconds": self.max_record_age_s,
            "DestinationConfig": {"OnFailure": {"Destination": destination}},
            "ParallelizationFactor": self.parallelization_factor,
        }

    def terraform_arguments(self, destination: str) -> dict[str, Any]:
        """Arguments of Terraform's `aws_lambda_event_source_mapping`."""
        return {
            "function_response_types": ["ReportBatchItemFailures"],
            "bisect_batch_on_function_error": self.bisect_on_error,
            "maximum_retry_attempts": self.retry_attempts,
            "maximum_record_age_in_seconds": self.max_record_age_s,
            "destination_config": {"on_failure": {"destination_arn": destination}},
            "parallelization_factor": self.parallelization_factor,
        }


def sam_event_overrides(spec: StackSpec, queue: Attr, stream_logical_id: str) -> dict[str, Any]:
    """The part of the SAM template to deep-merge over Chalice's `Load` function.

    Chalice names the function `Load` and its Kinesis event `LoadKinesisEventSource`; the merge
    adds the failure settings to that event and makes the function (hence its mapping) wait
    for the stream, which Chalice's template names but does not create.
    """
    failure = FailureSettings.from_spec(spec)
    return {
        "Load": {
            "DependsOn": [stream_logical_id],
            "Properties": {
                "Events": {
                    "LoadKinesisEventSource": {
                        "Properties": failure.api_parameters(queue.cloudformation())
                    }
                }
            },
        }
    }


def mappings_of(lambda_client: Any, function_name: str, stream_arn: str) -> list[dict[str, Any]]:
    """The function's mappings from the stream (filtered here: emulators match names loosely)."""
    paginator = lambda_client.get_paginator("list_event_source_mappings")
    return [
        dict(mapping)
        for page in paginator.paginate(EventSourceArn=stream_arn)
        for mapping in page["EventSourceMappings"]
        if mapping["FunctionArn"].split(":function:", 1)[-1].split(":")[0] == function_name
    ]


def _mapping(lambda_client: Any, function_name: str, stream_arn: str) -> dict[str, Any]:
    mappings = mappings_of(lambda_client, function_name, stream_arn)
    if len(mappings) != 1:
        raise RuntimeError(
            f"expected one event-source mapping from {stream_arn} to {function_name}, "
            f"found {len(mappings)}: did `chalice deploy` succeed?"
        )
    return dict(mappings[0])


def _wait_settled(lambda_client: Any, uuid: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """AWS refuses updates while a mapping is Creating or Updating; wait for it to settle."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        mapping = dict(lambda_client.get_event_source_mapping(UUID=uuid))
        if mapping.get("State", "Enabled") in _SETTLED_STATES:
            return mapping
        if time.monotonic() > deadline:
            raise TimeoutError(f"event-source mapping {uuid} stayed {mapping.get('State')}")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _differences(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {current.get(name)!r} -> {value!r}"
        for name, value in wanted.items()
        if not contains(current.get(name), value)
    ]


def apply_failure_settings(
    lambda_client: Any, spec: StackSpec, stream_arn: str, queue_arn: str
) -> Change:
    """Set the failure settings on the load function's Kinesis mapping; no call if in place."""
    function_name = spec.function_name(LOAD_FUNCTION)
    wanted = FailureSettings.from_spec(spec).api_parameters(queue_arn)
    mapping = _wait_settled(
        lambda_client, _mapping(lambda_client, function_name, stream_arn)["UUID"]
    )
    stream = stream_arn.rsplit("/", 1)[-1]
    label = f"event-source mapping {mapping['UUID']} ({stream} -> {function_name})"
    differences = _differences(mapping, wanted)
    if not differences:
        return Change(label, "unchanged")
    lambda_client.update_event_source_mapping(UUID=mapping["UUID"], **wanted)
    _wait_settled(lambda_client, mapping["UUID"])
    return Change(label, "updated", differences)
