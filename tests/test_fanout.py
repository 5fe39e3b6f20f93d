"""Fan-out: page ranges cover every page once, and fanned-out runs store the same result."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import wiring
from chalicelib.fanout import WorkItem, plan_ranges
from localcloud.fakeapi import iter_items
from localcloud.stack import LocalCloud


@given(pages=st.integers(min_value=0, max_value=5000), per=st.integers(min_value=1, max_value=700))
def test_ranges_cover_every_page_exactly_once(pages: int, per: int) -> None:
    ranges = plan_ranges(pages, per)
    assert ranges[0][0] == 1
    assert ranges[-1][1] is None  # the last range reads on to the end
    covered: list[int] = []
    for first, last in ranges:
        stop = max(pages, 1) if last is None else last
        assert 1 <= stop - first + 1 <= per
        covered.extend(range(first, stop + 1))
    assert covered == list(range(1, max(pages, 1) + 1))


def test_plan_rejects_an_empty_range_size() -> None:
    with pytest.raises(ValueError, match="pages_per_worker"):
        plan_ranges(10, 0)


@given(
    first=st.integers(min_value=1, max_value=10**6),
    length=st.none() | st.integers(min_value=0, max_value=10**4),
)
def test_work_item_round_trips(first: int, length: int | None) -> None:
    item = WorkItem(
        "20261126T101500Z-1a2b3c4d", "users", first, None if length is None else first + length
    )
    assert WorkItem.from_json(item.to_json()) == item


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        '{"run_id": "r", "resource": "users", "first_page": 0, "last_page": null}',
        '{"run_id": "r", "resource": "users", "first_page": 5, "last_page": 4}',
        '{"run_id": "r", "resource": "users"}',
    ],
)
def test_a_broken_work_item_is_a_clear_error(body: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        WorkItem.from_json(body)


def _stored(cloud: LocalCloud) -> dict[str, list[dict[str, object]]]:
    return {
        entity: cloud.stored_items("dynamodb", entity) for entity in cloud.settings.resource_list
    }


@pytest.mark.e2e
def test_fanned_out_run_stores_the_same_as_a_single_invocation(tmp_path: Path) -> None:
    env = {"PIPELINE_PAGE_SIZE": "20", "PIPELINE_CHANGE_DETECTION": "false"}
    with LocalCloud(tmp_path / "single", records=250, extra_env=env) as cloud:
        single = cloud.run()
        assert single.status == "succeeded", single.errors
        expected = _stored(cloud)
    fan_env = {**env, "PIPELINE_PAGES_PER_WORKER": "3"}  # 13 pages -> 5 work items a resource
    with LocalCloud(tmp_path / "fanned", records=250, extra_env=fan_env, workers=3) as cloud:
        fanned = cloud.run()
        assert fanned.status == "succeeded", fanned.errors
        assert _stored(cloud) == expected
        manifest = wiring.manifests(cloud.settings).get(fanned.run_id) or {}
    for entity, counts in fanned.entities.items():
        assert counts["fetched"] == single.entities[entity]["fetched"] == 250
        assert counts["published"] == 250
        assert manifest[f"work_items.{entity}"] == manifest[f"work_done.{entity}"] == 5
    assert len(expected["users"]) == len({item["id"] for item in iter_items("users", 250, 0)})
