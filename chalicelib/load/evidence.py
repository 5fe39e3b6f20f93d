"""The load's per-page evidence: which records a sink handled without writing them.

The reconciliation settles a page of a run from three cheap sources instead of one look-up per
record: the page's ledger item (what the ingest fetched), the rows the run wrote (read back in
bulk from each sink: every row carries `run_id` and `run_page`, the run and page that wrote
it), and this evidence. A record the sink *wrote* is proven by its row. A record the sink did
*not* write (its version was not newer than the stored one: a re-delivery, a repeat of the
page, an older version, or a content another run stored first) leaves no row of this run, so
the load notes it here: one item per page under the partition `<run_id>/load` of the
run-pages table, holding per sink a number set `skip_<sink>` of record digests.

Why sets of digests: a Kinesis batch can be delivered again, and every delivery must leave the
same evidence. DynamoDB's `ADD` of a number set is idempotent (a digest added twice is there
once), where a counter would count a re-delivered record twice. A digest is 63 bits of the
record's key and version, computed alike by the load (from the envelope) and the
reconciliation (from the ledger), so no position in the page is needed. A collision could
only make the reconciliation believe a record was handled that another record of the same
page was; a lost record is still found by its missing row, unless it collides with a
handled one (a chance of about 2^-57 for a page of 100).

The partition key ends with `/load`, so the load's role may write only these items
(`dynamodb:LeadingKeys`), never the ingest's ledger that the reconciliation trusts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

EVIDENCE_SUFFIX: Final = "/load"
"""Partition of the run-pages table holding a run's load evidence: `<run_id>/load`."""
SKIP_PREFIX: Final = "skip_"
RUN_ROWS_INDEX: Final = "by_run"
"""The DynamoDB entity tables' global secondary index of the rows each run wrote: hash key
`run_id`, range key `run_page`, projecting the table's key and `updated_at` (declared in
`infra/provision.py`)."""


def record_digest(key: Iterable[Any], version: str) -> int:
    """63 bits of a record's key (an `entity_key`) and version (`updated_at` as served)."""
    text = "\x1f".join([*(str(part) for part in key), version]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


def page_number(page_ref: str | None) -> int | None:
    """The page number of an envelope's `page` (`<run_id>/<entity>/p<N>`), if it has one."""
    if not page_ref:
        return None
    tail = page_ref.rsplit("/", 1)[-1]
    if not tail.startswith("p") or not tail[1:].isdigit():
        return None
    return int(tail[1:])


def page_key(entity: str, page: int) -> str:
    """The ledger's `page_id` of a page (`chalicelib.runs.ledger.PageLedger.page_id`)."""
    return f"{entity}#{page:09d}"


@dataclass
class PageEvidence:
    """What the load noted about one page: per sink, the digests it handled but did not write."""

    entity: str
    page: int
    skipped: dict[str, set[int]] = field(default_factory=dict)

    @property
    def page_id(self) -> str:
        return page_key(self.entity, self.page)


class LoadEvidence:
    """Writes (the load) and reads (the reconciliation) the evidence items of runs."""

    def __init__(self, client: DynamoDBClient, pages_table: str) -> None:
        self.client = client
        self.pages_table = pages_table

    def record(self, run_id: str, evidence: PageEvidence) -> None:
        """Add the page's digests to its evidence item: one UpdateItem, idempotent."""
        sets = {sink: digests for sink, digests in evidence.skipped.items() if digests}
        if not sets:
            return
        names = {f"#s{i}": f"{SKIP_PREFIX}{sink}" for i, sink in enumerate(sets)}
        values: dict[str, Any] = {
            f":s{i}": {"NS": [str(digest) for digest in sorted(digests)]}
            for i, digests in enumerate(sets.values())
        }
        self.client.update_item(
            TableName=self.pages_table,
            Key={
                "run_id": {"S": f"{run_id}{EVIDENCE_SUFFIX}"},
                "page_id": {"S": evidence.page_id},
            },
            UpdateExpression="ADD " + ", ".join(f"#s{i} :s{i}" for i in range(len(sets))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def pages(self, run_id: str, after: str | None = None) -> Iterator[PageEvidence]:
        """A run's evidence items in `page_id` order (the ledger's), after `after` if given."""
        condition = "run_id = :run"
        values: dict[str, Any] = {":run": {"S": f"{run_id}{EVIDENCE_SUFFIX}"}}
        if after is not None:
            condition += " AND page_id > :after"
            values[":after"] = {"S": after}
        paginator = self.client.get_paginator("query")
        for response in paginator.paginate(
            TableName=self.pages_table,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        ):
            for item in response.get("Items", []):
                yield from_item(item)


def from_item(item: Mapping[str, Any]) -> PageEvidence:
    entity, _, number = str(item["page_id"]["S"]).partition("#")
    skipped = {
        name.removeprefix(SKIP_PREFIX): {int(digest) for digest in value.get("NS", [])}
        for name, value in item.items()
        if name.startswith(SKIP_PREFIX)
    }
    return PageEvidence(entity, int(number), skipped)
