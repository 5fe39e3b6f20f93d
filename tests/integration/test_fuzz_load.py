"""Bad input, fuzzed: whatever a batch holds, the consumer neither crashes nor loses a record.

Hypothesis feeds `process_batch` (the load handler's core, with its real sinks, quarantine and
manifests on the moto server) batches mixing arbitrary bytes, near-valid envelopes (one field
wrong, missing or of the wrong type, a partition key that lies, hostile strings) and valid
records. Every record must end in exactly one place: stored (valid ones), quarantined with a
reason, or reported in `batchItemFailures` for re-delivery.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import wiring
from chalicelib.deadletter.quarantine import QuarantinedRecord
from chalicelib.load.consumer import process_batch
from chalicelib.model.contract import ENTITIES, entity_key, parse_timestamp, partition_key
from chalicelib.model.envelope import encode_envelope
from chalicelib.settings import get_settings
from infra.provision import provision
from localcloud.fakeapi import generate_item

_sequence = itertools.count(10**20)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def valid_record(draw: st.DrawFn) -> tuple[str, bytes, str]:
    entity = draw(st.sampled_from(ENTITIES))
    item = generate_item(entity, draw(st.integers(0, 199)), 200, draw(st.integers(0, 3)))
    data = encode_envelope(
        entity=entity, run_id="fuzz-run", fetched_at="2026-01-01T00:00:00", item=item
    )
    return "valid", data, partition_key(entity, item)


@st.composite
def near_valid_record(draw: st.DrawFn) -> tuple[str, bytes, str]:
    entity = draw(st.sampled_from(ENTITIES))
    item: dict[str, Any] = generate_item(entity, draw(st.integers(0, 199)), 200, 0)
    envelope: dict[str, Any] = {
        "schema_version": 1,
        "entity": entity,
        "run_id": "fuzz-run",
        "fetched_at": "2026-01-01T00:00:00",
        "item": item,
    }
    key = partition_key(entity, item)
    mutation = draw(
        st.sampled_from(
            [
                "drop-item-field",
                "retype-item-field",
                "drop-envelope-field",
                "envelope-value",
                "wrong-partition-key",
                "nul",
                "extra-envelope-field",
            ]
        )
    )
    if mutation == "drop-item-field":
        item.pop(draw(st.sampled_from(sorted(item))))
    elif mutation == "retype-item-field":
        item[draw(st.sampled_from(sorted(item)))] = draw(json_values)
    elif mutation == "drop-envelope-field":
        envelope.pop(draw(st.sampled_from(sorted(envelope))))
    elif mutation == "envelope-value":
        envelope[draw(st.sampled_from(sorted(envelope)))] = draw(json_values)
    elif mutation == "wrong-partition-key":
        key = draw(st.text(min_size=1, max_size=30))
    elif mutation == "nul":
        text_fields = [name for name, value in item.items() if isinstance(value, str)]
        item[draw(st.sampled_from(text_fields))] = "a\x00b"
    else:
        envelope[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return "near", orjson.dumps(envelope), key


garbage_record = st.tuples(
    st.just("garbage"), st.binary(max_size=200), st.text(min_size=1, max_size=40)
)

batches = st.lists(
    st.one_of(valid_record(), near_valid_record(), garbage_record), min_size=1, max_size=12
)


def lambda_record(data: bytes, key: str, sequence: str) -> dict[str, Any]:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": sequence,
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": 1_767_225_600.0,
        },
        "eventSource": "aws:kinesis",
        "eventID": f"shardId-000000000000:{sequence}",
    }


@pytest.fixture
def load_deps(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    prefix = f"fuzz-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PIPELINE_SINKS", "dynamodb")
    monkeypatch.setenv("PIPELINE_TABLE_PREFIX", prefix)
    monkeypatch.setenv("PIPELINE_QUARANTINE_BUCKET", f"{prefix}-quarantine")
    monkeypatch.setenv("PIPELINE_STREAM_NAME", f"{prefix}-events")
    wiring.reset()
    provision(get_settings(), shard_count=1)
    return wiring.load_dependencies()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=batches)
def test_every_record_is_stored_quarantined_or_reported(
    load_deps: Any, batch: list[tuple[str, bytes, str]]
) -> None:
    records = [lambda_record(data, key, str(next(_sequence))) for _, data, key in batch]
    outcome = process_batch(records, load_deps)  # must not raise

    failed = set(outcome.failed_sequence_numbers)
    sequences = {record["kinesis"]["sequenceNumber"] for record in records}
    quarantined: dict[str, QuarantinedRecord] = {}
    for key in load_deps.quarantine.keys(None):
        if "/load-" not in key:
            continue
        sequence = key.removesuffix(".json").rsplit("-", 1)[-1]  # load-<shard>-<sequence>
        if sequence in sequences:
            quarantined[sequence] = load_deps.quarantine.get(key)
    sink = load_deps.sinks[0]
    for (kind, data, _), record in zip(batch, records, strict=True):
        sequence = record["kinesis"]["sequenceNumber"]
        set_aside = [sequence in failed, sequence in quarantined]
        if kind == "valid":
            assert set_aside == [False, False], kind
        if kind == "valid" or not any(set_aside):
            assert is_stored(sink, data), (kind, data)  # neither set aside: must be stored
        else:
            assert set_aside.count(True) == 1, (kind, set_aside)
        if sequence in quarantined:
            entry = quarantined[sequence]
            assert entry.reason
            assert entry.payload == data  # the full payload, as received


def is_stored(sink: Any, data: bytes) -> bool:
    """Whether the sink holds the record's key at its version or newer."""
    envelope = orjson.loads(data)
    entity, item = envelope["entity"], envelope["item"]
    key = entity_key(entity, item)
    version = sink.stored_versions(entity, [key]).get(key)
    return version is not None and parse_timestamp(version) >= parse_timestamp(item["updated_at"])
