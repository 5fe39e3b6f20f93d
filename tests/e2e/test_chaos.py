"""Chaos runs in the embedded local cloud: every fault, and all of them at once.

Each run uses small pages and batches so that a few hundred records give every fault many
opportunities; the stores must then end exactly as in a clean run of the same data (or, with
`poison`, as the clean run minus the poisoned records, which are all in the quarantine).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.model.contract import ENTITIES, entity_key
from chalicelib.model.envelope import Envelope
from chalicelib.settings import get_settings
from chalicelib.stream.publisher import KinesisPublisher, OutgoingRecord
from infra.provision import provision
from localcloud import cli
from localcloud.chaos import FAULTS, Chaos, ChaosSpecError, parse_spec
from localcloud.fakeapi import FakeApiServer, FaultInjector, generate_item
from localcloud.run_report import RunReport
from localcloud.stack import LocalCloud

RECORDS = 120
SEED = 7
FAST = {
    "PIPELINE_PAGE_SIZE": "10",
    "PIPELINE_BATCH_SIZE": "20",
    "PIPELINE_BACKOFF_FACTOR_S": "0.05",
    "PIPELINE_MAX_BACKOFF_S": "0.5",
}
"""Small pages and batches (more opportunities for faults), short API backoffs (fast tests)."""

Dump = dict[str, list[dict[str, Any]]]


def read_dump(directory: Path) -> Dump:
    return {
        str(path.relative_to(directory)): [
            orjson.loads(line) for line in path.read_bytes().splitlines()
        ]
        for path in sorted(directory.rglob("*.jsonl"))
        if path.name != "quarantine.jsonl"
    }


def run_cloud(tmp: Path, chaos: Chaos | None, **options: Any) -> tuple[RunReport, Dump, Path]:
    with LocalCloud(
        tmp / "state", records=RECORDS, seed=SEED, extra_env=FAST, chaos=chaos, **options
    ) as cloud:
        report = cloud.run()
        cloud.dump(tmp / "dump")
    return report, read_dump(tmp / "dump"), tmp / "dump"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Dump:
    report, dump, _ = run_cloud(tmp_path_factory.mktemp("clean"), None)
    assert report.status == "succeeded", report.errors
    assert all(len(rows) == RECORDS for rows in dump.values())
    return dump


def test_spec_parsing() -> None:
    assert parse_spec("consumer-crash") == {"consumer-crash": 0.05}
    assert parse_spec("api-5xx=0.3, poison=0") == {"api-5xx": 0.3, "poison": 0.0}
    assert set(parse_spec("all")) == {name for name, fault in FAULTS.items() if fault.in_all}
    assert "renamed-field" in FAULTS  # content faults are named one by one, never by `all`
    assert "renamed-field" not in parse_spec("all")
    assert parse_spec("all,kinesis-throttle=1")["kinesis-throttle"] == 1.0
    for bad in ("nope", "api-5xx=2", "api-5xx=x", ""):
        with pytest.raises(ChaosSpecError):
            parse_spec(bad)


def test_with_an_external_api_the_api_faults_are_not_injected() -> None:
    chaos = Chaos.from_spec("all", fake_api=False)
    assert chaos.api_injector is None
    assert chaos.environment() == {}
    assert Chaos.from_spec("all").api_injector is not None


def test_cli_rejects_a_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--chaos", "bogus"]) == 2
    assert "unknown fault" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.parametrize(
    "spec",
    [
        "kinesis-partial=0.5",
        "kinesis-throttle=0.3",
        "dynamodb-throttle=0.2",
        "consumer-crash=0.3",
        "duplicate-delivery=0.3",
        "producer-timeout=1",
        "postgres-disconnect=0.3",
        "api-5xx=0.2",
        "api-429=0.2",
        "api-timeout=0.08",
    ],
)
def test_a_fault_leaves_the_stores_as_a_clean_run(spec: str, clean: Dump, tmp_path: Path) -> None:
    name = spec.split("=")[0]
    report, dump, _ = run_cloud(tmp_path, Chaos.from_spec(spec, seed=1))
    assert report.chaos is not None
    assert report.chaos[name] > 0, f"{name} was never injected"
    assert report.status == "succeeded", report.errors
    assert dump == clean
    assert not (tmp_path / "dump" / "quarantine.jsonl").read_text().strip()
    if name == "producer-timeout":
        assert report.ingest_invocations > 1


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["api-5xx", "api-429", "api-timeout"])
def test_an_api_that_keeps_failing_fails_each_resource_by_url(name: str, tmp_path: Path) -> None:
    """Every request answered 5xx, 429 or too late: once the retries are spent each resource
    fails naming its URL, nothing is stored or quarantined, and Lambda's retries of the run
    end (three attempts), with no DatasetUpdated."""
    environment = {
        **FAST,
        "PIPELINE_MAX_RETRIES": "1",
        "PIPELINE_REQUEST_TIMEOUT_S": "1",  # below the fault's 2.5 s stall
    }
    chaos = Chaos.from_spec(f"{name}=1", seed=1)
    with LocalCloud(
        tmp_path / "state", records=RECORDS, seed=SEED, extra_env=environment, chaos=chaos
    ) as cloud:
        report = cloud.run()
        cloud.dump(tmp_path / "dump")
    dump = read_dump(tmp_path / "dump")
    assert report.status == "failed"
    assert report.chaos is not None
    assert report.chaos[name] > 0
    assert report.ingest_invocations == 3
    assert report.event is None
    assert set(dump) == {f"{sink}/{e}.jsonl" for sink in ("dynamodb", "postgres") for e in ENTITIES}
    assert all(rows == [] for rows in dump.values()), dump  # nothing in either sink
    assert not (tmp_path / "dump" / "quarantine.jsonl").read_text().strip()
    for entity in ENTITIES:
        assert any(
            f"'{entity}'" in error and f"/{entity}?page=1&size=10" in error
            for error in report.errors
        ), (entity, report.errors)


def expected_without_poison(clean: Dump, chaos: Chaos) -> tuple[Dump, int]:
    """The clean dump minus the keys the fake API served poisoned."""
    injector = chaos.api_injector
    assert isinstance(injector, FaultInjector)
    expected: Dump = {}
    poisoned_by_entity: dict[str, set[Any]] = {}
    for path, rows in clean.items():  # one path per sink and entity
        entity = path.split("/")[1].removesuffix(".jsonl")
        poisoned = poisoned_by_entity.setdefault(
            entity,
            {
                entity_key(entity, generate_item(entity, index, RECORDS, SEED))
                for index in range(RECORDS)
                if injector.is_poisoned(entity, index)
            },
        )
        expected[path] = [row for row in rows if entity_key(entity, row) not in poisoned]
    return expected, sum(len(keys) for keys in poisoned_by_entity.values())


@pytest.mark.e2e
def test_poison_is_quarantined_and_the_rest_stored(clean: Dump, tmp_path: Path) -> None:
    chaos = Chaos.from_spec("poison=0.05", seed=1)
    report, dump, directory = run_cloud(tmp_path, chaos)
    assert report.status == "succeeded", report.errors
    expected, poisoned = expected_without_poison(clean, chaos)
    injector = chaos.api_injector
    assert isinstance(injector, FaultInjector)
    assert poisoned > 0
    assert dump == expected
    for entity in ENTITIES:
        counts = report.entities[entity]
        assert counts["stored"]["dynamodb"] + counts["quarantined"] == counts["fetched"]
    lines = [json.loads(line) for line in (directory / "quarantine.jsonl").read_text().splitlines()]
    # the API counts poison per response: page 1, read again at the end of a walk, counts twice
    assert len(lines) == poisoned <= report.chaos["poison"]  # type: ignore[index]
    for entity in ENTITIES:  # each quarantined record is one the API poisoned, by its place
        origins = sorted(line["origin"] for line in lines if line["entity"] == entity)
        assert origins == sorted(
            f"ingest-p{index // 10 + 1}-i{index % 10}"
            for index in range(RECORDS)
            if injector.is_poisoned(entity, index)
        ), entity
    assert all(line["reason"].startswith("breaks the contract") for line in lines)
    assert all("payload" in line for line in lines)


@pytest.mark.e2e
def test_all_faults_at_once(clean: Dump, tmp_path: Path) -> None:
    chaos = Chaos.from_spec("all", seed=1)
    report, dump, _ = run_cloud(tmp_path, chaos)
    assert report.status == "succeeded", report.errors
    assert report.chaos is not None
    assert set(report.chaos) == {name for name, fault in FAULTS.items() if fault.in_all}
    expected, _ = expected_without_poison(clean, chaos)
    assert dump == expected
    for name in ("kinesis-partial", "dynamodb-throttle", "consumer-crash", "producer-timeout"):
        assert report.chaos[name] > 0


@pytest.mark.e2e
def test_cli_chaos_with_an_external_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeApiServer(records=60, seed=2) as api:
        code = cli.main(
            [
                "run",
                "--api-url",
                api.url,
                "--chaos",
                "api-5xx=1,duplicate-delivery=0.5",
                "--seed",
                "3",
                "--json",
                "--state-dir",
                str(tmp_path / "state"),
            ]
        )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert summary["chaos"]["api-5xx"] == 0  # lives in the built-in API: not injected
    assert summary["chaos"]["duplicate-delivery"] > 0
    assert summary["status"] == "succeeded"


@pytest.fixture
def tables(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    prefix = f"hooks-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PIPELINE_SINKS", "dynamodb")  # the fault hooks under test are DynamoDB's
    monkeypatch.setenv("PIPELINE_TABLE_PREFIX", prefix)
    monkeypatch.setenv("PIPELINE_STREAM_NAME", f"{prefix}-events")
    monkeypatch.setenv("PIPELINE_QUARANTINE_BUCKET", f"{prefix}-quarantine")
    wiring.reset()
    provision(get_settings(), shard_count=1)
    return prefix


def test_dynamodb_faults_reach_the_sink_and_are_absorbed(tables: str) -> None:
    """A throttled call is retried by botocore; unprocessed items are resent by the sink."""
    sink = wiring.load_dependencies().sinks[0]
    chaos = Chaos({"dynamodb-throttle": 0.3}, seed=2)
    chaos.attach([aws.client("dynamodb")])
    try:
        items = [generate_item("users", index, 50, 0) for index in range(50)]
        envelopes = [
            Envelope(entity="users", run_id="r", fetched_at="2026-01-01T00:00:00", item=item)
            for item in items
        ]
        written = sink.write("users", envelopes)
    finally:
        chaos.detach()
    assert chaos.counts()["dynamodb-throttle"] > 0
    assert len(written) == 50
    assert sink.count("users") == 50


def test_kinesis_partial_failures_are_faithful(tables: str) -> None:
    """Records reported failed were not written: after the publisher's resends each record
    is in the stream exactly once."""
    kinesis = boto3.client("kinesis")
    chaos = Chaos({"kinesis-partial": 1.0}, seed=3)
    chaos.attach([kinesis])
    publisher = KinesisPublisher(kinesis, get_settings().stream_name, sleep=lambda _: None)
    try:
        for index in range(40):
            publisher.add(OutgoingRecord(f"users:{index}", b"{}", "users"))
        publisher.flush()
    finally:
        chaos.detach()
    assert chaos.counts()["kinesis-partial"] > 0
    assert publisher.stats.failed_attempts > 0
    shard = kinesis.list_shards(StreamName=get_settings().stream_name)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=get_settings().stream_name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    keys = [r["PartitionKey"] for r in kinesis.get_records(ShardIterator=iterator)["Records"]]
    assert sorted(keys) == sorted(f"users:{index}" for index in range(40))
