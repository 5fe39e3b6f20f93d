"""`chalicelib.runs.counters`: the runs table's counter names are stored, so their spelling is
a contract with every run already recorded and with every reader (reconcile, run report, bench)."""

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.model.contract import ENTITIES
from chalicelib.runs import counters

entities = st.sampled_from(sorted(ENTITIES))
sinks = st.sampled_from(["dynamodb", "postgres"])


@given(entities, sinks)
def test_names_keep_the_stored_spelling(entity: str, sink: str) -> None:
    assert counters.fetched(entity) == f"fetched.{entity}"
    assert counters.published(entity) == f"published.{entity}"
    assert counters.unchanged(entity) == f"unchanged.{entity}"
    assert counters.quarantined("ingest", entity) == f"quarantined.ingest.{entity}"
    assert counters.quarantined("load", entity) == f"quarantined.load.{entity}"
    assert counters.written(sink, entity) == f"written.{sink}.{entity}"
    assert counters.written_to(sink) == f"written.{sink}"
    assert counters.reconciled("missing", entity) == f"reconciled.missing.{entity}"


@given(entities, entities, sinks)
def test_an_entity_names_only_its_own_counters(entity: str, other: str, sink: str) -> None:
    """A reader matching `written.<sink>.<entity>` by prefix and suffix finds only that entity."""
    name = counters.written(sink, entity)
    assert name.startswith(counters.WRITTEN_PREFIX)
    assert name.endswith(f".{other}") == (entity == other)
