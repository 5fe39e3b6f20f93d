"""Change detection through the whole pipeline: a rerun over an unchanged source publishes
and writes nothing; rows that lost their fingerprint are written once more, then skipped.

The fingerprint and look-up rules themselves are tested against moto in
tests/integration/test_changes.py.
"""

from __future__ import annotations

from pathlib import Path

from chalicelib.aws import clients as aws
from chalicelib.model.fingerprint import FINGERPRINT_ATTRIBUTE
from localcloud.stack import LocalCloud


def test_a_rerun_over_an_unchanged_source_publishes_and_writes_nothing(state_dir: Path) -> None:
    with LocalCloud(state_dir, records=300, extra_env={"PIPELINE_PAGE_SIZE": "50"}) as cloud:
        first = cloud.run()
        assert first.status == "succeeded", first.errors
        second = cloud.run()
        assert second.status == "succeeded", second.errors
        # rows stored before change detection existed have no fingerprint: published again
        dynamodb = aws.client("dynamodb")
        table = cloud.settings.table_name("users")
        keys = [row["id"] for row in dynamodb.scan(TableName=table, Limit=5)["Items"]]
        for key in keys:
            dynamodb.update_item(
                TableName=table, Key={"id": key}, UpdateExpression=f"REMOVE {FINGERPRINT_ATTRIBUTE}"
            )
        third = cloud.run()
        assert third.status == "succeeded", third.errors
        fourth = cloud.run()
        assert fourth.status == "succeeded", fourth.errors
    for entity, counts in second.entities.items():
        fetched = first.entities[entity]["fetched"]
        assert counts["fetched"] == fetched
        assert counts["published"] == 0
        assert counts["written"] == {"postgres": 0, "dynamodb": 0}
        assert counts["unchanged"] == fetched - counts["quarantined"]
        assert counts["stored"] == first.entities[entity]["stored"]
    assert third.entities["users"]["published"] == len(keys) == 5
    assert third.entities["users"]["unchanged"] == 295
    # equal updated_at, later fetch: the version rule applies them again, with their fingerprint
    assert third.entities["users"]["written"] == {"postgres": 5, "dynamodb": 5}
    assert third.entities["tracks"]["published"] == 0
    # ... so the row's fingerprint describes its content again, and the next run skips them
    assert fourth.entities["users"]["published"] == 0
