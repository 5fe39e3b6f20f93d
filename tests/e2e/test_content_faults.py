"""A source whose pages parse but whose content is wrong or changing, end to end.

Each case switches on one content fault of the built-in fake API
(`localcloud/fakeapi/content_faults.py`) and runs the whole local cloud: ingest, Kinesis,
load into DynamoDB and PostgreSQL, the reconciliation. It asserts what both stores hold, what
is quarantined and why, the status and its reasons, the schema-drift report and the superseded
count. Bounds on time are the ones the
local cloud already enforces (its drain timeout); nothing here measures wall-clock time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from chalicelib.model.contract import ENTITIES, entity_key
from localcloud.chaos import Chaos
from localcloud.fakeapi import generate_item
from localcloud.fakeapi.content_faults import RENAMED, apply_content_faults
from localcloud.run_report import RunReport
from localcloud.stack import LocalCloud

pytestmark = pytest.mark.e2e

RECORDS = 60
SEED = 3
PAGE = 10
ENV = {"PIPELINE_PAGE_SIZE": str(PAGE), "PIPELINE_BATCH_SIZE": "25"}
FANNED_OUT = {"PIPELINE_PAGES_PER_WORKER": "2"}
"""6 pages per resource as 3 work items of the ingest_worker function."""
SPLIT = pytest.mark.parametrize("split", [False, True], ids=["one-ingest", "fanned-out"])


def served(entity: str, probabilities: dict[str, float], fault_seed: int) -> list[Any]:
    """Every item the fake API serves for `entity` with these content faults, in order."""
    items: list[Any] = []
    for start in range(0, RECORDS, PAGE):
        page = [generate_item(entity, i, RECORDS, SEED) for i in range(start, start + PAGE)]
        items += apply_content_faults(
            probabilities, fault_seed, entity, start, page, lambda *_: None
        )
    return items


def dump(cloud: LocalCloud, directory: Path) -> dict[str, Any]:
    cloud.dump(directory)
    rows = {
        str(path.relative_to(directory)): [
            orjson.loads(line) for line in path.read_bytes().splitlines()
        ]
        for path in sorted(directory.rglob("*.jsonl"))
        if path.name != "quarantine.jsonl"
    }
    quarantine = [
        json.loads(line) for line in (directory / "quarantine.jsonl").read_text().splitlines()
    ]
    return {"rows": rows, "quarantine": quarantine}


def by_key(entity: str, items: list[Any]) -> dict[Any, Any]:
    """The last served item of each key (the later fetch wins a tie)."""
    return {entity_key(entity, item): item for item in items}


def cloud_with(tmp: Path, spec: str, split: bool = False, **env: str) -> LocalCloud:
    return LocalCloud(
        tmp / "state",
        records=RECORDS,
        seed=SEED,
        extra_env={**ENV, **(FANNED_OUT if split else {}), **env},
        chaos=Chaos.from_spec(spec, seed=1),
    )


def split_as_asked(report: RunReport, split: bool, entities: tuple[str, ...] = ENTITIES) -> None:
    for entity in entities:
        assert report.entities[entity].get("work_items", 0) == (3 if split else 0), entity


def balances(report: RunReport) -> None:
    for entity, counts in report.entities.items():
        stored = counts["stored"]["dynamodb"]
        assert counts["stored"]["postgres"] == stored, entity
        assert counts["fetched"] == stored + counts["superseded"] + counts["quarantined"], (
            entity,
            counts,
        )


@SPLIT
def test_a_repeated_key_on_a_page_is_superseded_and_the_run_settles(
    tmp_path: Path, split: bool
) -> None:
    """The same id twice on one page (an exact duplicate row): the reconciliation's look-up
    must not fail ("Provided list of item keys contains duplicates"); the repeat is counted."""
    with cloud_with(tmp_path, "duplicate-item=0.15", split) as cloud:
        report = cloud.run()
        contents = dump(cloud, tmp_path / "dump")
    assert report.status == "succeeded", report.errors
    split_as_asked(report, split)
    assert contents["quarantine"] == []
    assert report.chaos is not None
    assert report.chaos["duplicate-item"] > 0
    balances(report)
    for entity in ENTITIES:
        items = served(entity, {"duplicate-item": 0.15}, 1)
        distinct = by_key(entity, items)
        assert report.entities[entity]["superseded"] == len(items) - len(distinct)
        for sink in ("dynamodb", "postgres"):
            assert len(contents["rows"][f"{sink}/{entity}.jsonl"]) == len(distinct)


@SPLIT
def test_every_user_with_a_renamed_field_fails_the_quality_gate(
    tmp_path: Path, split: bool
) -> None:
    """All of a resource quarantined is not "succeeded": the run fails naming the resource, its
    own alarm fires, the drift names the new field; nothing of it is stored."""
    with cloud_with(tmp_path, "renamed-field=1", split, PIPELINE_RESOURCES="users,tracks") as cloud:
        report = cloud.run()
        contents = dump(cloud, tmp_path / "dump")
    assert report.status == "failed"
    split_as_asked(report, split, ("users", "tracks"))
    for entity in ("users", "tracks"):
        for sink in ("dynamodb", "postgres"):
            assert contents["rows"][f"{sink}/{entity}.jsonl"] == [], (sink, entity)
    assert len(contents["quarantine"]) == 2 * RECORDS
    gate = [error for error in report.errors if "PIPELINE_MAX_QUARANTINE_RATIO" in error]
    assert len(gate) == 2  # users and tracks both renamed a field
    assert gate[0].startswith("users: 60 of 60 fetched records quarantined (100%)")
    assert report.entities["users"]["quarantined"] == RECORDS
    assert report.schema_drift == {"tracks": ["title"], "users": ["e_mail"]}
    reasons = {line["reason"] for line in contents["quarantine"] if line["entity"] == "users"}
    assert reasons == {"breaks the contract: email: Field required"}
    assert report.metrics.get("QualityGateFailed") == 2
    assert any(
        name.endswith("quality-gate") and state == "ALARM" for name, state in report.alarms.items()
    )
    assert report.event is None  # no DatasetUpdated for a failed run


@SPLIT
def test_a_few_bad_records_pass_the_gate_and_unknown_fields_are_reported(
    tmp_path: Path, split: bool
) -> None:
    probabilities = {"renamed-field": 0.05, "extra-field": 0.3}
    spec = ",".join(f"{name}={p}" for name, p in probabilities.items())
    with cloud_with(tmp_path, spec, split) as cloud:
        report = cloud.run()
        contents = dump(cloud, tmp_path / "dump")
    assert report.status == "succeeded", report.errors
    split_as_asked(report, split)
    balances(report)
    assert report.as_dict()["schema_drift"] == report.schema_drift  # `run --json` shows it
    for entity in ENTITIES:
        items = served(entity, probabilities, 1)
        renamed = [item for item in items if RENAMED[entity][1] in item]
        assert 0 < len(renamed) <= RECORDS * 0.10
        assert report.entities[entity]["quarantined"] == len(renamed)
        assert report.schema_drift[entity] == sorted({RENAMED[entity][1], "source_region"})
        quarantined = [line for line in contents["quarantine"] if line["entity"] == entity]
        assert sorted(entity_key(entity, line["payload"]) for line in quarantined) == sorted(
            entity_key(entity, item) for item in renamed
        )
        assert {line["reason"] for line in quarantined} == {
            f"breaks the contract: {RENAMED[entity][0]}: Field required"
        }
        for sink in ("dynamodb", "postgres"):
            rows = contents["rows"][f"{sink}/{entity}.jsonl"]
            assert len(rows) == len(by_key(entity, items)) - len(renamed)
            for row in rows:
                assert "source_region" not in row  # unknown fields are not stored
    assert report.metrics.get("UnknownFields", 0) > 0


@pytest.fixture(scope="module")
def corrected(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[RunReport], list[dict[str, Any]]]:
    """One stage, four runs: clean; a bad clock; the source respells timestamps and changes
    content with the same updated_at; the same again (nothing left to publish)."""
    tmp = tmp_path_factory.mktemp("corrected")
    chaos = Chaos.from_spec(
        "future-updated-at=0,respelled-timestamps=0,same-version-change=0", seed=1
    )
    injector = chaos.api_injector
    assert injector is not None
    reports, dumps = [], []
    with LocalCloud(tmp / "state", records=RECORDS, seed=SEED, extra_env=ENV, chaos=chaos) as cloud:
        for number, faults in enumerate(
            [
                {},
                {"future-updated-at": 0.05},
                {"respelled-timestamps": 0.3, "same-version-change": 0.3},
                {"respelled-timestamps": 0.3, "same-version-change": 0.3},
            ]
        ):
            for name in ("future-updated-at", "respelled-timestamps", "same-version-change"):
                injector.probabilities[name] = faults.get(name, 0.0)
            reports.append(cloud.run())
            dumps.append(dump(cloud, tmp / f"dump{number}"))
    return reports, dumps


def test_a_timestamp_from_the_future_is_quarantined_and_never_freezes_a_row(
    corrected: tuple[list[RunReport], list[dict[str, Any]]],
) -> None:
    reports, dumps = corrected
    report = reports[1]
    assert report.status == "succeeded", report.errors
    future = [line for line in dumps[1]["quarantine"] if "in the future" in line["reason"]]
    assert future
    assert all(line["reason"].startswith("breaks the contract: updated_at:") for line in future)
    assert dumps[1]["rows"] == dumps[0]["rows"]  # the stores kept the last good version


def test_respelled_timestamps_keep_one_row_per_key_in_both_stores(
    corrected: tuple[list[RunReport], list[dict[str, Any]]],
) -> None:
    reports, dumps = corrected
    report = reports[2]
    assert report.status == "succeeded", report.errors
    balances(report)
    probabilities = {"respelled-timestamps": 0.3, "same-version-change": 0.3}
    for entity in ENTITIES:
        expected = sorted(
            by_key(entity, served(entity, probabilities, 1)).values(),
            key=lambda i: entity_key(entity, i),
        )
        for sink in ("dynamodb", "postgres"):
            rows = dumps[2]["rows"][f"{sink}/{entity}.jsonl"]
            assert len(rows) == len(dumps[0]["rows"][f"{sink}/{entity}.jsonl"])
            assert rows == expected, (sink, entity)  # the new text as served, the new content


def test_content_changed_under_an_equal_updated_at_is_applied_once(
    corrected: tuple[list[RunReport], list[dict[str, Any]]],
) -> None:
    reports, dumps = corrected
    assert reports[2].entities["users"]["published"] > 0
    assert reports[2].entities["users"]["written"]["dynamodb"] > 0
    fourth = reports[3]
    assert fourth.status == "succeeded", fourth.errors
    for entity in ENTITIES:  # every row's fingerprint describes its content: nothing to redo
        assert fourth.entities[entity]["published"] == 0, entity
    assert dumps[3]["rows"] == dumps[2]["rows"]
