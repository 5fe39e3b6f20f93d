"""Redrive: quarantined records after a fix, and batches the load trigger gave up on."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import boto3
import orjson
import pytest

from chalicelib import wiring
from chalicelib.deadletter.quarantine import QuarantinedRecord
from chalicelib.settings import get_settings
from infra.provision import provision
from localcloud import cli
from localcloud.chaos import Chaos
from localcloud.fakeapi import generate_item
from localcloud.stack import LocalCloud

RECORDS = 40


@pytest.mark.e2e
def test_batches_given_up_on_are_lost_until_redriven(tmp_path: Path) -> None:
    """The load function crashes on every batch and the trigger retries nothing: every batch
    goes to the on-failure queue, the run fails naming what it lost; the redrive reads the
    ranges back from the stream, the run then balances."""
    chaos = Chaos.from_spec("consumer-crash=1", seed=0)
    with LocalCloud(tmp_path, records=RECORDS, chaos=chaos) as cloud:
        cloud.event_source = dataclasses.replace(
            cloud.mapping_settings(),
            batch_size=20,
            bisect_batch_on_function_error=False,
            maximum_retry_attempts=0,
        )
        report = cloud.run()
        assert report.status == "failed"
        assert any("on-failure queue" in error for error in report.errors)
        assert sum(e.get("missing", 0) for e in report.entities.values()) > 0
        assert any(e.get("missing_records") for e in report.entities.values())

        redrive, after = cloud.redrive(report.run_id, sources=("failures",))
        assert redrive.failures["republished"] == redrive.failures["records"] > 0
        assert redrive.failures.get("expired", 0) == 0
        assert after.status == "succeeded", after.errors
        for counts in after.entities.values():
            assert counts["stored"]["dynamodb"] == RECORDS
        queue = cloud.provisioned.failure_queue_url  # type: ignore[union-attr]
        attributes = boto3.client("sqs").get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0"


@pytest.mark.e2e
def test_a_fixed_quarantined_record_is_redriven_into_its_run(tmp_path: Path) -> None:
    chaos = Chaos.from_spec("poison=0.1", seed=2)
    with LocalCloud(
        tmp_path,
        records=RECORDS,
        seed=9,
        chaos=chaos,
        # 10 % poison on 40 records is above the default quality gate; this is about redrive
        extra_env={"PIPELINE_PAGE_SIZE": "10", "PIPELINE_MAX_QUARANTINE_RATIO": "0.5"},
    ) as cloud:
        report = cloud.run()
        assert report.status == "succeeded", report.errors
        quarantine = wiring.quarantine(cloud.settings)
        keys = sorted(quarantine.keys(report.run_id))
        assert len(keys) >= 2
        # the operator fixes one record (as the API would serve it once repaired)
        record = quarantine.get(keys[0])
        page, position = record.origin.removeprefix("ingest-p").split("-i")
        index = (int(page) - 1) * 10 + int(position)
        fixed_item = generate_item(record.entity, index, RECORDS, 9)
        quarantine.replace(
            QuarantinedRecord(
                run_id=record.run_id,
                entity=record.entity,
                origin=record.origin,
                reason=record.reason,
                payload=orjson.dumps(fixed_item),
            )
        )
        stored_before = report.entities[record.entity]["stored"]["dynamodb"]

        redrive, after = cloud.redrive(report.run_id, sources=("quarantine",))
        assert after.status == "succeeded", after.errors
        counts = redrive.quarantine[record.entity]
        assert counts["republished"] == 1
        assert sum(c["still_invalid"] for c in redrive.quarantine.values()) == len(keys) - 1
        assert after.entities[record.entity]["stored"]["dynamodb"] == stored_before + 1
        assert fixed_item in cloud.stored_items("dynamodb", record.entity)
        markers = list(quarantine.redriven(report.run_id))
        assert [m.origin for m in markers] == [record.origin]
        assert markers[0].redrive_id == redrive.redrive_id
        assert keys[0] not in set(quarantine.keys(report.run_id))
        manifest = wiring.manifests(cloud.settings).get(report.run_id)
        assert manifest is not None
        assert manifest[f"redriven.{record.entity}"] == 1


def test_cli_redrive_against_an_endpoint(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"redrive-{uuid.uuid4().hex[:8]}"
    for name, value in {
        "PIPELINE_TABLE_PREFIX": prefix,
        "PIPELINE_STREAM_NAME": f"{prefix}-events",
        "PIPELINE_QUARANTINE_BUCKET": f"{prefix}-quarantine",
    }.items():
        monkeypatch.setenv(name, value)
    wiring.reset()
    provision(get_settings(), shard_count=1)
    quarantine = wiring.quarantine(get_settings())
    good = generate_item("tracks", 0, 10, 1)
    quarantine.put(
        QuarantinedRecord("run-1", "tracks", "ingest-p1-i0", "was bad", orjson.dumps(good))
    )
    quarantine.put(
        QuarantinedRecord("run-1", "tracks", "ingest-p1-i1", "still bad", b'{"id": "x"}')
    )

    assert cli.main(["redrive", "--dry-run", "--json"]) == 1  # one record stays invalid
    dry = json.loads(capsys.readouterr().out)
    assert dry["quarantine"]["tracks"] == {"examined": 2, "republished": 1, "still_invalid": 1}
    assert len(list(quarantine.keys())) == 2  # a dry run changes nothing

    assert cli.main(["redrive", "--source", "quarantine", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["quarantine"]["tracks"]["republished"] == 1
    assert summary["still_invalid"][0].startswith("run-1/tracks/ingest-p1-i1.json")
    assert list(quarantine.keys()) == ["run-1/tracks/ingest-p1-i1.json"]

    kinesis = boto3.client("kinesis")
    shard = kinesis.list_shards(StreamName=f"{prefix}-events")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=f"{prefix}-events", ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator)["Records"]
    assert [r["PartitionKey"] for r in records] == [f"tracks:{good['id']}"]
    envelope = orjson.loads(records[0]["Data"])
    assert envelope["run_id"] == "run-1"  # redriven records keep their run
    assert envelope["item"] == good
