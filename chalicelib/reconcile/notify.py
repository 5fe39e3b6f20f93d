"""The downstream signal: one EventBridge event when a run's records are all loaded.

A retraining job subscribes to it (a rule on `source` and `detail-type`) instead of polling
the stores. The detail carries the run's counts per resource, so the subscriber can tell
what changed (for example skip retraining when nothing was written).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

SOURCE: Final = "moovitamix.pipeline"
DETAIL_TYPE: Final = "DatasetUpdated"
DETAIL_VERSION: Final = 1
"""Version of the detail's shape; bump it when the shape changes."""


class NotifyError(RuntimeError):
    """EventBridge did not accept the event."""


def dataset_updated_detail(
    run_id: str, status: str, entities: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The event's detail: the run and its counts (fetched, published, written, stored...)."""
    return {
        "detail_version": DETAIL_VERSION,
        "run_id": run_id,
        "status": status,
        "entities": {name: dict(counts) for name, counts in entities.items()},
    }


def publish_dataset_updated(
    client: EventBridgeClient,
    bus_name: str,
    run_id: str,
    status: str,
    entities: Mapping[str, Mapping[str, Any]],
) -> str:
    """Put one DatasetUpdated event on the bus; returns its event id, raises NotifyError."""
    detail = dataset_updated_detail(run_id, status, entities)
    try:
        response = client.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": DETAIL_TYPE,
                    "Detail": orjson.dumps(detail).decode(),
                    "EventBusName": bus_name,
                }
            ]
        )
    except ClientError as error:
        raise NotifyError(
            f"EventBridge refused the {DETAIL_TYPE} event of run {run_id}: "
            f"{error.response['Error'].get('Code')} {error.response['Error'].get('Message')}"
        ) from error
    entry = response["Entries"][0] if response.get("Entries") else {}
    if response.get("FailedEntryCount") or "EventId" not in entry:
        raise NotifyError(
            f"EventBridge refused the {DETAIL_TYPE} event of run {run_id}: "
            f"{entry.get('ErrorCode', 'no event id')} {entry.get('ErrorMessage', '')}".strip()
        )
    return str(entry["EventId"])
