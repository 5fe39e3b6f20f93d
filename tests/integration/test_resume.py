"""Resumable ingestion: checkpoints after flush, resume by event id, bounded invocations."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib import handlers, wiring
from chalicelib.aws import clients as aws
from chalicelib.ingest.run import IngestFailed, run_ingest
from chalicelib.runs.ledger import Deadline, RunSuperseded, run_id_for_event
from chalicelib.runs.page_ledger import PageLedger
from chalicelib.settings import get_settings
from infra.provision import provision
from localcloud.fakeapi import FakeApiServer
from localcloud.triggers.lambda_runtime import LambdaContext, scheduled_event

RECORDS = 45  # 5 pages of 10 per resource


class CountdownContext(LambdaContext):
    """Reports plenty of time for `checks` questions, then none."""

    def __init__(self, checks: int) -> None:
        super().__init__("ingest")
        self.checks = checks

    def get_remaining_time_in_millis(self) -> int:
        self.checks -= 1
        return 900_000 if self.checks >= 0 else 0


@pytest.fixture
def pipeline(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    prefix = f"resume-{uuid.uuid4().hex[:8]}"
    with FakeApiServer(records=RECORDS, seed=3) as api:
        for name, value in {
            "PIPELINE_API_URL": api.url,
            "PIPELINE_TABLE_PREFIX": prefix,
            "PIPELINE_STREAM_NAME": f"{prefix}-events",
            "PIPELINE_QUARANTINE_BUCKET": f"{prefix}-quarantine",
            "PIPELINE_PAGE_SIZE": "10",
            "PIPELINE_RESOURCES": "users,tracks",
            "PIPELINE_INGEST_STOP_MARGIN_S": "60",
        }.items():
            monkeypatch.setenv(name, value)
        wiring.reset()
        provision(get_settings(), shard_count=1)
        yield prefix


def stream_keys() -> Counter[str]:
    """How many times each partition key is in the stream."""
    kinesis = boto3.client("kinesis")
    name = get_settings().stream_name
    shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    keys: Counter[str] = Counter()
    while True:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        keys.update(record["PartitionKey"] for record in response["Records"])
        if not response["Records"]:
            return keys
        iterator = response["NextShardIterator"]


def manifest(run_id: str) -> dict[str, Any]:
    found = wiring.manifests(get_settings()).get(run_id)
    assert found is not None
    return found


def test_the_run_id_is_the_same_for_every_delivery_of_an_event() -> None:
    event = scheduled_event("arn:aws:events:us-east-1:123456789012:rule/r", "us-east-1")
    assert run_id_for_event(event) == run_id_for_event(dict(event))
    other = {**event, "id": "another-event"}
    assert run_id_for_event(other) != run_id_for_event(event)
    assert run_id_for_event(event).startswith(event["time"][:10].replace("-", ""))


def test_a_run_stopped_at_its_deadline_resumes_without_refetching(pipeline: str) -> None:
    run_id = "20260101T000000Z-aaaaaaaa"
    first = run_ingest(
        wiring.ingest_dependencies(), run_id=run_id, deadline=Deadline(CountdownContext(3), 60)
    )
    assert first.status == "continuing"
    state = manifest(run_id)
    assert state["ingest_status"] == "continuing"
    assert 0 < state["checkpoint.users"] < 5
    published_before = sum(stream_keys().values())
    assert published_before == state["published.users"]  # checkpointed = in the stream

    second = run_ingest(wiring.ingest_dependencies(), run_id=run_id)
    assert second.status == "published"
    keys = stream_keys()
    assert len(keys) == 2 * RECORDS
    assert set(keys.values()) == {1}  # a clean stop re-publishes nothing
    state = manifest(run_id)
    assert state["fetched.users"] == state["fetched.tracks"] == RECORDS
    assert state["ingest_invocations"] == 2
    assert state["complete.users"] == state["complete.tracks"] == 1


def test_a_crash_after_publishing_repeats_only_unchecked_pages(pipeline: str) -> None:
    """A process that dies between PutRecords and the checkpoint: its pages come again,
    published twice in the stream (the sinks absorb that) but counted once."""
    run_id = "20260101T000000Z-bbbbbbbb"
    dynamodb = aws.client("dynamodb")
    checkpoints = {"n": 0}

    def die_at_second_checkpoint(params: dict[str, Any], **_: Any) -> None:
        if b'"#cp"' in params["body"]:
            checkpoints["n"] += 1
            if checkpoints["n"] == 2:  # tracks: published, not yet checkpointed
                raise RuntimeError("Lambda timeout")

    dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", die_at_second_checkpoint)
    try:
        with pytest.raises(RuntimeError, match="Lambda timeout"):
            run_ingest(wiring.ingest_dependencies(), run_id=run_id)
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.UpdateItem", die_at_second_checkpoint)
    assert manifest(run_id)["ingest_status"] == "running"

    run_ingest(wiring.ingest_dependencies(), run_id=run_id)
    keys = stream_keys()
    assert len(keys) == 2 * RECORDS  # nothing skipped
    assert {times for key, times in keys.items() if key.startswith("users:")} == {1}
    twice = {key.split(":")[0] for key, times in keys.items() if times == 2}
    assert twice == {"tracks"}  # only the pages that were not checkpointed came again
    state = manifest(run_id)
    assert state["fetched.users"] == RECORDS  # nothing counted twice
    assert state["fetched.tracks"] == RECORDS
    assert state["published.users"] + state["published.tracks"] == 2 * RECORDS
    ledger_pages = list(wiring.progress(get_settings()).pages(run_id))
    assert sorted(p.page_id for p in ledger_pages) == sorted(
        {f"{r}#{n:09d}" for r in ("users", "tracks") for n in range(1, 6)}
    )


def test_a_duplicate_event_after_the_run_changes_nothing(pipeline: str) -> None:
    event = scheduled_event("arn:aws:events:us-east-1:123456789012:rule/r", "us-east-1")
    first = handlers.handle_schedule(event, LambdaContext("ingest"))
    assert first["status"] == "published"
    again = handlers.handle_schedule(event, LambdaContext("ingest"))
    assert again["status"] == "duplicate"
    assert again["run_id"] == first["run_id"]
    assert sum(stream_keys().values()) == 2 * RECORDS


def test_the_handler_continues_in_a_new_invocation_before_its_timeout(pipeline: str) -> None:
    invoked: list[dict[str, Any]] = []
    client = aws.client("lambda")

    def capture(params: dict[str, Any], **_: Any) -> Any:
        invoked.append(params)
        from botocore.awsrequest import AWSResponse, HTTPHeaders

        return AWSResponse("", 202, HTTPHeaders(), None), {"StatusCode": 202}

    client.meta.events.register_first("before-call.lambda.Invoke", capture)
    event = scheduled_event("arn:aws:events:us-east-1:123456789012:rule/r", "us-east-1")
    try:
        result = handlers.handle_schedule(event, CountdownContext(2))
    finally:
        client.meta.events.unregister("before-call.lambda.Invoke", capture)
    assert result["status"] == "continuing"
    assert len(invoked) == 1
    assert invoked[0]["url_path"].startswith("/2015-03-31/functions/arn%3Aaws%3Alambda")
    assert b'"id":"' + event["id"].encode() in invoked[0]["body"]


def test_a_run_that_never_finishes_fails_after_the_invocation_limit(
    pipeline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_INGEST_MAX_INVOCATIONS", "2")
    wiring.reset()
    run_id = "20260101T000000Z-cccccccc"
    for _ in range(2):
        result = run_ingest(
            wiring.ingest_dependencies(), run_id=run_id, deadline=Deadline(CountdownContext(1), 60)
        )
        assert result.status == "continuing"
    with pytest.raises(IngestFailed, match="PIPELINE_INGEST_MAX_INVOCATIONS"):
        run_ingest(wiring.ingest_dependencies(), run_id=run_id)
    assert manifest(run_id)["ingest_status"] == "failed"


def test_two_invocations_cannot_both_checkpoint_the_same_pages(pipeline: str) -> None:
    progress = wiring.progress(get_settings())
    run_id = "20260101T000000Z-dddddddd"
    progress.begin(run_id, "2026-01-01T00:00:00", ["users"])
    page = PageLedger("users", 1, [(0, [1], "2026-01-01T00:00:00")])
    assert progress.commit(run_id, "users", [page], 0) == 1
    with pytest.raises(RunSuperseded):
        progress.commit(run_id, "users", [page], 0)
    assert manifest(run_id)["fetched.users"] == 1
