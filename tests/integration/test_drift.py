"""Schema drift reports: unknown fields of every page end up in the run manifest, merged
across pages and invocations, counted, and never stored."""

from __future__ import annotations

import logging

import pytest

from chalicelib.aws import clients as aws
from chalicelib.ingest.drift import page_drift, report_drift
from chalicelib.runs.manifest import RunManifests, schema_drift
from tests.helpers.factories import provision_stores, unique_name, user


@pytest.fixture
def manifests(aws_env: str) -> RunManifests:
    settings = provision_stores(unique_name("drift"))
    return RunManifests(aws.client("dynamodb"), settings.table_name("runs"))


def test_pages_merge_their_unknown_fields_into_the_manifest(
    manifests: RunManifests, caplog: pytest.LogCaptureFixture
) -> None:
    manifests.start("run-1", "2026-01-01T00:00:00+00:00", ["users"])
    pages = [
        [user(nickname="a"), user(), user(nickname="b", plan="x")],
        [user(plan="y"), None, "not an object"],
    ]
    with caplog.at_level(logging.WARNING, logger="moovitamix"):
        for items in pages:
            fields, items_with = page_drift("users", items)
            report_drift(manifests, "run-1", "users", fields, items_with)
        report_drift(manifests, "run-1", "users", *page_drift("users", pages[1]))  # again
    manifest = manifests.get("run-1")
    assert manifest is not None
    assert schema_drift(manifest) == {"users": ["nickname", "plan"]}
    assert manifest["unknown_fields.users"] == 4  # 2 + 1, and the page read again: 1
    warnings = [r for r in caplog.records if r.getMessage().startswith("schema drift")]
    assert len(warnings) == 2  # one per new field set, not one per page


def test_a_page_without_drift_writes_nothing(manifests: RunManifests) -> None:
    manifests.start("run-2", "2026-01-01T00:00:00+00:00", ["tracks"])
    fields, items_with = page_drift("users", [user(), user()])
    assert (fields, items_with) == ({}, 0)
    report_drift(manifests, "run-2", "users", fields, items_with)
    assert schema_drift(manifests.get("run-2") or {}) == {}
