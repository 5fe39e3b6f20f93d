"""Fan-out of a large resource: page ranges as work items on an SQS queue.

One invocation may run 15 minutes; a resource with more pages than `pages_per_worker` is split
into consecutive page ranges, one SQS message each, and the worker function fetches and
publishes each range (`chalicelib/ingest/worker.py`). Ranges cover pages 1..N exactly once; the last
range is open-ended, so pages that appear while the run goes on are still read. A message may
be delivered more than once (SQS is at-least-once): a work item's counts go to the run
manifest once, under its `work_id` (`chalicelib/runs/ledger.py`). Records of one
entity key keep their order on the stream because each key lives on exactly one page of one
range, whichever worker publishes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SEND_BATCH: Final = 10
"""SendMessageBatch accepts at most 10 messages."""


@dataclass(frozen=True, slots=True)
class WorkItem:
    """Pages `first_page..last_page` of one resource for one run; `last_page` None: to the end."""

    run_id: str
    resource: str
    first_page: int
    last_page: int | None
    expected_total: int | None = None
    """The `total` the API announced when the run planned the ranges: a worker finding another
    one fails its item (the source changed under the run, offsets shifted)."""

    @property
    def work_id(self) -> str:
        """Names the range within its run: `users#1-2000`, `users#2001-end`."""
        last = "end" if self.last_page is None else str(self.last_page)
        return f"{self.resource}#{self.first_page}-{last}"

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "run_id": self.run_id,
                "resource": self.resource,
                "first_page": self.first_page,
                "last_page": self.last_page,
                "expected_total": self.expected_total,
            }
        ).decode()

    @classmethod
    def from_json(cls, body: str) -> WorkItem:
        """Parse a message body; raises ValueError (or KeyError) when it is not a work item."""
        document = orjson.loads(body)
        last = document["last_page"]
        total = document.get("expected_total")
        item = cls(
            run_id=str(document["run_id"]),
            resource=str(document["resource"]),
            first_page=int(document["first_page"]),
            last_page=None if last is None else int(last),
            expected_total=None if total is None else int(total),
        )
        if item.first_page < 1 or (item.last_page is not None and item.last_page < item.first_page):
            raise ValueError(f"empty or invalid page range in work item {body[:200]!r}")
        return item


def plan_ranges(pages: int, pages_per_worker: int) -> list[tuple[int, int | None]]:
    """Consecutive ranges of at most `pages_per_worker` pages; the last one is open-ended."""
    if pages_per_worker < 1:
        raise ValueError("pages_per_worker must be >= 1")
    starts = list(range(1, max(pages, 1) + 1, pages_per_worker))
    return [
        (start, None if index == len(starts) - 1 else start + pages_per_worker - 1)
        for index, start in enumerate(starts)
    ]


class WorkQueue:
    """Sends the work items of a resource to the work queue."""

    def __init__(self, client: SQSClient, queue_name: str) -> None:
        self.client = client
        self.queue_name = queue_name
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self.client.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        return self._url

    def send(self, items: Sequence[WorkItem]) -> None:
        """Queue the work items (SendMessageBatch of 10); raises when one was not queued."""
        for start in range(0, len(items), SEND_BATCH):
            chunk = items[start : start + SEND_BATCH]
            entries: list[Any] = [
                {"Id": str(index), "MessageBody": item.to_json()}
                for index, item in enumerate(chunk)
            ]
            response = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            if response.get("Failed"):
                raise RuntimeError(
                    f"{len(response['Failed'])} work items not queued on {self.queue_name}: "
                    f"{response['Failed'][0]}"
                )
