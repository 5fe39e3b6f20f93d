"""Builders shared by the tests: contract items, envelopes, Lambda Kinesis records, settings.

Kept in one place so every test speaks the same contract: an item here is exactly what the
API serves, a record here is exactly what Lambda hands the load handler.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from typing import Any

from chalicelib.model.contract import partition_key
from chalicelib.model.envelope import encode_envelope
from chalicelib.settings import Settings

_ids = itertools.count(1)
_sequences = itertools.count(49_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000)


def unique_name(prefix: str) -> str:
    """A lowercase name no other test uses (S3 bucket rules: <= 63 chars, [a-z0-9-])."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def next_id() -> int:
    """A fresh id, so tests sharing one moto server never touch each other's rows."""
    return 10_000_000 + next(_ids) + uuid.uuid4().int % 1_000_000 * 1000


def user(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": 1,
        "first_name": "Mary",
        "last_name": "O'Connor",
        "email": "mary@example.com",
        "gender": "Female",
        "favorite_genres": "Jazz",
        "created_at": "2025-07-13T01:47:15.825923",
        "updated_at": "2025-03-01T08:00:00",
    }
    item.update(overrides)
    return item


def track(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": 2,
        "name": "Midnight Groove",
        "artist": "Beyoncé",
        "songwriters": "A. Writer",
        "duration": "03:45",
        "genres": "river",
        "album": "東京事変",
        "created_at": "2024-01-02T03:04:05.000006",
        "updated_at": "2025-01-02T03:04:05",
    }
    item.update(overrides)
    return item


def listen_history(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "user_id": 1,
        "items": [5, 3, 99_999, 1, 42],
        "created_at": "2025-02-03T04:05:06.070809",
        "updated_at": "2025-02-04T00:00:00",
    }
    item.update(overrides)
    return item


BUILDERS = {"users": user, "tracks": track, "listen_history": listen_history}


def item_for(entity: str, **overrides: Any) -> dict[str, Any]:
    return BUILDERS[entity](**overrides)


def next_sequence() -> str:
    """A Kinesis-like sequence number (a big decimal string), increasing across the session."""
    return str(next(_sequences))


def kinesis_record(
    data: bytes | str,
    key: str,
    *,
    sequence: str | None = None,
    shard_id: str = "shardId-000000000000",
    stream_arn: str = "arn:aws:kinesis:us-east-1:123456789012:stream/test",
) -> dict[str, Any]:
    """One record of a Lambda Kinesis event; `data` str is put in the event as is (raw)."""
    sequence = sequence or next_sequence()
    encoded = base64.b64encode(data).decode() if isinstance(data, bytes) else data
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": sequence,
            "data": encoded,
            "approximateArrivalTimestamp": 1_752_580_800.123,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/moovitamix-load",
        "awsRegion": "us-east-1",
        "eventSourceARN": stream_arn,
    }


def envelope_record(
    entity: str,
    item: dict[str, Any],
    *,
    run_id: str = "run-test",
    fetched_at: str = "2025-07-15T12:00:00.000000+00:00",
    key: str | None = None,
) -> dict[str, Any]:
    """The Lambda record of one published item, as the producer would publish it."""
    data = encode_envelope(entity=entity, run_id=run_id, fetched_at=fetched_at, item=item)
    return kinesis_record(data, key if key is not None else partition_key(entity, item))


def settings_for(prefix: str, **overrides: Any) -> Settings:
    """Settings naming a fresh stream, tables and bucket under `prefix`."""
    values: dict[str, Any] = {
        "stream_name": f"{prefix}-events",
        "table_prefix": prefix,
        "quarantine_bucket": f"{prefix}-quarantine",
    }
    values.update(overrides)
    return Settings(**values)


def provision_stores(prefix: str) -> Settings:
    """Create the tables and the quarantine bucket of a fresh `prefix` (no stream)."""
    from infra.provision import TABLE_KEYS, table_logical_id
    from infra.resources import ApplyContext, DynamoTable, PrivateBucket

    settings = settings_for(prefix)
    ctx = ApplyContext()
    for suffix, keys in TABLE_KEYS.items():
        DynamoTable(table_logical_id(suffix), settings.table_name(suffix), tuple(keys)).apply(ctx)
    # plain HTTP to the emulator: its TLS-only policy would refuse every request
    PrivateBucket("QuarantineBucket", settings.quarantine_bucket, tls_only=False).apply(ctx)
    return settings


def create_stream(name: str, shards: int = 2) -> str:
    """Create a Kinesis stream through the infra code path; returns its ARN."""
    from infra.resources import ApplyContext, KinesisStream

    ctx = ApplyContext()
    KinesisStream("Stream", name, shards).apply(ctx)
    return ctx.attributes["Stream"]["Arn"]


def use_fresh_stage(monkeypatch: Any, name: str, **environment: str) -> Settings:
    """Point the process's settings at a fresh, fully provisioned prefix (one shard).

    `environment` adds `PIPELINE_*` variables; wiring is reset so handlers see them.
    """
    from chalicelib import wiring
    from chalicelib.settings import get_settings
    from infra.provision import provision

    prefix = unique_name(name)
    for variable, value in {
        "PIPELINE_TABLE_PREFIX": prefix,
        "PIPELINE_STREAM_NAME": f"{prefix}-events",
        "PIPELINE_QUARANTINE_BUCKET": f"{prefix}-quarantine",
        "PIPELINE_WORK_QUEUE": f"{prefix}-ingest-work",
        **environment,
    }.items():
        monkeypatch.setenv(variable, value)
    wiring.reset()
    settings = get_settings()
    provision(settings, shard_count=1)
    return settings


def make_commands(*arguments: str) -> str:
    """What `make -n ARGUMENTS` would run, from the project root; standalone, also under make
    (its variables would otherwise leak into the dry run)."""
    import os
    import subprocess

    from infra.stages import PROJECT_ROOT

    return subprocess.run(
        ["make", "--no-print-directory", "-n", *arguments],
        cwd=PROJECT_ROOT,
        env={
            name: value
            for name, value in os.environ.items()
            if name not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
