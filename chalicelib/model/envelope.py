"""The stream envelope: one record on Kinesis, what it holds and where it comes from.

The ingest writes it (`encode_envelope`), the load and the redrive read it (`decode_envelope`);
a fixed key order makes equal records equal bytes. `page_id` names the page an item came from,
so a stored or quarantined record leads back to its page in the ingest's logs.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, StrictStr

from chalicelib.model.contract import EntityName

SCHEMA_VERSION: Final = 1
"""Version of the envelope format; bump it when the envelope changes shape."""


class Envelope(BaseModel):
    """One stream record: what it holds, where it comes from, and when it was fetched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    entity: EntityName
    run_id: StrictStr
    fetched_at: StrictStr
    item: dict[str, Any]
    page: StrictStr | None = None
    """Optional (same schema version): `<run_id>/<entity>/p<N>`, the page the item came from."""


def encode_envelope(
    *, entity: str, run_id: str, fetched_at: str, item: dict[str, Any], page: str | None = None
) -> bytes:
    """Serialize one envelope; a fixed key order makes equal records equal bytes."""
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "entity": entity,
        "run_id": run_id,
        "fetched_at": fetched_at,
        "item": item,
    }
    if page is not None:
        document["page"] = page
    return orjson.dumps(document)


def decode_envelope(data: bytes) -> Envelope:
    """Parse one stream record; raises `ValueError` when it is not an envelope."""
    return Envelope.model_validate(orjson.loads(data))


def page_id(run_id: str, entity: str, page: int) -> str:
    """`<run_id>/<entity>/p<N>`: carried in each envelope, so a stored record leads to its page.

    The ingest logs each page under this id ("page published"), the load logs how many records
    of each page it wrote ("batch loaded", `pages`), and quarantined records keep it too.
    """
    return f"{run_id}/{entity}/p{page}"
