"""The benchmark's machinery: its floor stores what the pipeline stores, its smallest run works
end to end and writes every field of its result file.

Speed targets are checked by `make bench` itself, never here: this only proves that the
measurement runs and reports what it promises, at a tiny size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import scale
from bench.cli import check_targets, data_writes, main
from bench.markdown import render
from chalicelib.changes import content_fingerprint, fingerprint_salt
from chalicelib.contract import ENTITIES, Envelope, validate_item
from chalicelib.sinks.dynamodb import to_row
from chalicelib.sinks.postgres import TABLES, column_values
from localcloud.fakeapi import generate_item

TINY = [
    "--sizes", "200,400",
    "--full-max", "200",
    "--reference-size", "200",
    "--repeat", "2",
    "--write-rows", "30",
    "--report-only",
]  # fmt: skip


def _envelope(entity: str, index: int, seed: int) -> Envelope:
    item = validate_item(entity, generate_item(entity, index, 10_000, seed))
    return Envelope(entity=entity, run_id="20260101T000000Z-00000000", fetched_at="t", item=item)


@given(
    entity=st.sampled_from(ENTITIES),
    index=st.integers(min_value=0, max_value=9_999),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_floor_rows_are_the_sinks_rows(entity: str, index: int, seed: int) -> None:
    from bench.floor import dynamodb_item, postgres_columns, postgres_row

    envelope = _envelope(entity, index, seed)
    assert dynamodb_item(entity, envelope, None) == to_row(entity, envelope).serialize()
    salt = fingerprint_salt(["dynamodb", "postgres"])
    fingerprint = content_fingerprint(salt, entity, envelope.item)
    assert (
        dynamodb_item(entity, envelope, salt) == to_row(entity, envelope, fingerprint).serialize()
    )
    sink_columns = [column[0] for column in column_values(TABLES[entity], [envelope])]
    row = postgres_row(entity, envelope)
    assert row[: len(sink_columns)] == sink_columns
    assert [name for name, _ in postgres_columns(entity)][: len(sink_columns)] == [
        name for name, _ in TABLES[entity].columns
    ]
    if entity == "listen_history":
        assert row[-1] == envelope.item["items"]


def test_scale_on_paper_grows_with_the_events() -> None:
    small, large = (scale.Scale(n, 400, 3600) for n in (1_000_000, 100_000_000))
    assert small.shards == 1
    assert large.shards == 28  # 27,778 records/s at 1,000 records/s per shard
    assert large.shards_aggregated == 11  # 10.6 MiB/s at 1 MiB/s per shard
    assert large.kinesis_cost(aggregated=True) < large.kinesis_cost()
    assert large.dynamodb_cost == 100 * small.dynamodb_cost
    table = scale.render(400, 3600)
    assert "| 100,000,000 |" in table


def _run(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    assert main([*TINY, *extra, "--out", str(out)]) == 0
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    return result


@pytest.mark.e2e
def test_bench_smallest_run_measures_pipeline_floor_memory_and_calls(tmp_path: Path) -> None:
    result = _run(tmp_path, "--workers", "")
    assert {"started_at", "command", "machine", "options", "sizes", "fanout"} <= set(result)
    assert {"dynamodb_write_strategies", "targets", "ok"} <= set(result)
    full, ingest_only = result["sizes"]
    assert (full["mode"], ingest_only["mode"]) == ("full", "ingest-only")
    for entry in (full, ingest_only):
        pipeline = entry["pipeline"]
        assert pipeline["status"] == "succeeded", pipeline["errors"]
        assert pipeline["records"] == 3 * entry["records_per_resource"]
        assert pipeline["records_per_s"] > 0
        assert set(pipeline["memory_mb"]) == {
            "ingest_peak",
            "ingest_baseline",
            "load_peak",
            "load_baseline",
        }
        assert pipeline["memory_mb"]["ingest_peak"] >= pipeline["memory_mb"]["ingest_baseline"] > 0
        put = pipeline["aws"]["ingest"]["put_records"]
        assert put["records"] == pipeline["records"]
        assert entry["calls_per_1000"]["kinesis"] > 0
    stored = full["pipeline"]["entities"]
    assert all(counts["stored"] == {"dynamodb": 200, "postgres": 200} for counts in stored.values())
    floor = full["floor"]
    assert floor["records"] == full["pipeline"]["records"]
    assert floor["postgres_rows"] == {entity: 200 for entity in ENTITIES}
    assert len(full["pipeline_attempts_records_per_s"]) == 2
    assert full["pipeline"]["records_per_s"] == max(full["pipeline_attempts_records_per_s"])
    assert floor["records_per_s"] == max(full["floor_attempts_records_per_s"])
    assert full["ratio"] > 0
    assert full["floor_calls_per_1000"]["dynamodb"] > 0
    assert full["pipeline"]["memory_mb"]["load_peak"] > 0
    names = " ".join(target["name"] for target in result["targets"])
    for fragment in ("x floor", "peak memory", "PutRecords", "5 MiB", "unchanged re-run"):
        assert fragment in names
    writes = result["dynamodb_write_strategies"]
    assert writes["read_compare_batch_write"]["rows_per_s"] > 0
    assert writes["conditional_put"]["rows_per_s"] > 0
    assert "| target | measured | met |" in render(result)


def test_unchanged_rerun_target_names_writes_to_data_tables() -> None:
    second = {
        "status": "succeeded",
        "data_tables": ["p-users"],
        "entities": {
            "users": {"fetched": 5, "published": 0, "unchanged": 5, "written": {"dynamodb": 0}}
        },
        "aws": {
            "ingest": {
                "calls": {"kinesis.PutRecords": 0, "dynamodb.BatchWriteItem": 2},
                "dynamodb_tables": {"BatchWriteItem p-run-pages": 1, "BatchGetItem p-users": 1},
            },
            "load": {"calls": {}, "dynamodb_tables": {"BatchWriteItem p-users": 1}},
        },
    }
    assert data_writes(second) == ["load: dynamodb.BatchWriteItem p-users x1"]
    entry = {
        "records_per_resource": 5,
        "mode": "full",
        "ratio": 1.0,
        "second_run": second,
        "pipeline": {
            "status": "succeeded",
            "memory_mb": {"ingest_peak": 1.0},
            "aws": {"ingest": {"put_records": {"calls": 1, "records": 500, "max_bytes": 1}}},
        },
    }
    targets = check_targets({"sizes": [entry]}, 5)
    unchanged = next(t for t in targets if "unchanged re-run" in t["name"])
    assert not unchanged["met"]
    second["aws"]["load"]["dynamodb_tables"] = {}  # type: ignore[index]
    targets = check_targets({"sizes": [entry]}, 5)
    assert next(t for t in targets if "unchanged re-run" in t["name"])["met"]


@pytest.mark.e2e
def test_bench_change_detection_and_fanout(tmp_path: Path) -> None:
    """Needs the change detection and fan-out of the ingest (issue 7)."""
    result = _run(
        tmp_path, "--sizes", "200", "--repeat", "1",
        "--fanout-size", "300", "--fanout-pages", "1", "--workers", "1,2",
    )  # fmt: skip
    unchanged = next(t for t in result["targets"] if "unchanged re-run" in t["name"])
    assert unchanged["met"], unchanged["value"]
    fanout = result["fanout"]
    assert fanout["identical"] is True
    assert [run["work_items"] for run in fanout["runs"]] == [9, 9]  # 3 pages x 3 resources
    assert [run["work_done"] for run in fanout["runs"]] == [9, 9]
    assert all(run["status"] == "succeeded" for run in fanout["runs"])
