"""The load function's Kinesis event-source mapping: one model, applied and read back.

Chalice creates the mapping of the load function with a batch size and window only. The
failure settings (report partial batch failures, bisect a failing batch, a bounded number of
retries, a maximum record age, an SQS on-failure destination) and the pinned parallelization
factor of 1 are modelled here with the rest of the mapping, once, in
`KinesisEventSourceSettings`, and written every way the mapping exists: applied with
`UpdateEventSourceMapping` after `chalice deploy`, merged into the SAM template's Kinesis
event, added to the Terraform event-source mapping, compared with the deployed mapping by
`infra.deploy.check`, read back from the emulator by the local cloud
(`localcloud/deployment.py`, `from_api`) whose driver (`localcloud/triggers/kinesis.py`) honours the
same semantics. Field names are the AWS parameter names in snake case.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from chalicelib.settings import Settings
from infra.resources import Attr, Change, contains
from infra.spec import StackSpec

LOAD_FUNCTION = "load"
"""Chalice name of the function the Kinesis trigger invokes."""

_SETTLED_STATES = ("Enabled", "Disabled")

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"

STARTING_POSITION = "TRIM_HORIZON"
"""Where a new mapping starts reading (`app.py` passes the same to Chalice)."""

PARALLELIZATION_FACTOR = 1
"""Concurrent batches per shard. The DynamoDB sink reads a row's stored version, compares and
writes (newest wins): two batches of one shard in flight at once could both read the old row
and the older write could land last. One batch per shard at a time keeps that safe; Lambda's
default is 1 too, but a console edit or a bare `chalice deploy` must not change it unseen."""

MAX_RECORD_AGE_RANGE = (60, 604_800)
"""What Lambda accepts for `MaximumRecordAgeInSeconds` besides -1 (no limit)."""


@dataclass(frozen=True)
class KinesisEventSourceSettings:
    """The load function's Kinesis mapping, including what Lambda does with a batch the
    function could not process.

    The defaults bound the damage of a poison batch: at most `maximum_retry_attempts` retries
    (bisecting on function errors first, which AWS does not count as retries), records older
    than `maximum_record_age_in_seconds` are not retried either, and whatever is given up is
    described in the on-failure destination (an SQS queue) so that it can be redriven.
    """

    batch_size: int = 100
    maximum_batching_window_in_seconds: int = 5
    starting_position: str = STARTING_POSITION
    parallelization_factor: int = PARALLELIZATION_FACTOR
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
        """The stage's mapping, from its `PIPELINE_*` settings: what the deploy applies and
        what the local driver and bench run, so they and AWS behave alike."""
        age = settings.trigger_max_record_age_s
        low, high = MAX_RECORD_AGE_RANGE
        if age != -1 and not low <= age <= high:
            raise ValueError(
                f"PIPELINE_TRIGGER_MAX_RECORD_AGE_S={age}: Lambda accepts -1 or {low}..{high}"
            )
        values: dict[str, Any] = {
            "batch_size": settings.batch_size,
            "maximum_batching_window_in_seconds": settings.batching_window_s,
            "bisect_batch_on_function_error": settings.trigger_bisect_on_error,
            "maximum_retry_attempts": settings.trigger_retry_attempts,
            "maximum_record_age_in_seconds": age,
            "on_failure_destination_arn": on_failure_destination_arn,
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_spec(
        cls, spec: StackSpec, on_failure_destination_arn: str | None = None
    ) -> KinesisEventSourceSettings:
        return cls.from_settings(spec.settings, on_failure_destination_arn)

    @classmethod
    def from_api(cls, mapping: dict[str, Any]) -> KinesisEventSourceSettings:
        """A mapping exactly as `GetEventSourceMapping`/`ListEventSourceMappings` describe it:
        an absent setting is Lambda's default, not this class's."""
        destination = (mapping.get("DestinationConfig") or {}).get("OnFailure", {})
        return cls(
            batch_size=int(mapping.get("BatchSize", 100)),
            maximum_batching_window_in_seconds=int(
                mapping.get("MaximumBatchingWindowInSeconds", 0)
            ),
            starting_position=str(mapping.get("StartingPosition", STARTING_POSITION)),
            parallelization_factor=int(mapping.get("ParallelizationFactor", 1)),
            function_response_types=tuple(mapping.get("FunctionResponseTypes") or ()),
            bisect_batch_on_function_error=bool(mapping.get("BisectBatchOnFunctionError", False)),
            maximum_retry_attempts=int(mapping.get("MaximumRetryAttempts", -1)),
            maximum_record_age_in_seconds=int(mapping.get("MaximumRecordAgeInSeconds", -1)),
            on_failure_destination_arn=destination.get("Destination"),
        )

    @property
    def reports_batch_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    def failure_parameters(self, destination: Any = None) -> dict[str, Any]:
        """What Chalice cannot set: the `CreateEventSourceMapping`/`UpdateEventSourceMapping`
        (and SAM) parameters of the failure handling. `destination` overrides the on-failure
        destination (a CloudFormation reference in a template)."""
        destination = destination if destination is not None else self.on_failure_destination_arn
        return {
            "FunctionResponseTypes": list(self.function_response_types),
            "BisectBatchOnFunctionError": self.bisect_batch_on_function_error,
            "MaximumRetryAttempts": self.maximum_retry_attempts,
            "MaximumRecordAgeInSeconds": self.maximum_record_age_in_seconds,
            "DestinationConfig": {"OnFailure": {"Destination": destination}},
            "ParallelizationFactor": self.parallelization_factor,
        }

    def as_api_parameters(self) -> dict[str, Any]:
        """Keyword arguments of UpdateEventSourceMapping (without UUID/FunctionName): every
        setting, the destination only when there is one."""
        parameters: dict[str, Any] = {
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.maximum_batching_window_in_seconds,
            **self.failure_parameters(),
        }
        if not self.on_failure_destination_arn:
            del parameters["DestinationConfig"]
        parameters.update(self.extra)
        return parameters

    def terraform_arguments(self, destination: str) -> dict[str, Any]:
        """The failure settings as arguments of Terraform's `aws_lambda_event_source_mapping`."""
        return {
            "function_response_types": list(self.function_response_types),
            "bisect_batch_on_function_error": self.bisect_batch_on_function_error,
            "maximum_retry_attempts": self.maximum_retry_attempts,
            "maximum_record_age_in_seconds": self.maximum_record_age_in_seconds,
            "destination_config": {"on_failure": {"destination_arn": destination}},
            "parallelization_factor": self.parallelization_factor,
        }


def sam_event_overrides(spec: StackSpec, queue: Attr, stream_logical_id: str) -> dict[str, Any]:
    """The part of the SAM template to deep-merge over Chalice's `Load` function.

    Chalice names the function `Load` and its Kinesis event `LoadKinesisEventSource`; the merge
    adds the failure settings to that event and makes the function (hence its mapping) wait
    for the stream, which Chalice's template names but does not create.
    """
    failure = KinesisEventSourceSettings.from_spec(spec)
    return {
        "Load": {
            "DependsOn": [stream_logical_id],
            "Properties": {
                "Events": {
                    "LoadKinesisEventSource": {
                        "Properties": failure.failure_parameters(queue.cloudformation())
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
    wanted = KinesisEventSourceSettings.from_spec(spec, queue_arn).failure_parameters()
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
