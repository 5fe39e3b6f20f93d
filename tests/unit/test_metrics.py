"""The metric recorder: EMF documents, dimension sets, chunking, the handler flush, API retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from werkzeug import Response

from chalicelib.ingest.source_session import build_session
from chalicelib.model.envelope import Envelope
from chalicelib.observability import emf as metrics_module
from chalicelib.observability.catalogue import CATALOGUE, NAMESPACE
from chalicelib.observability.emf import MAX_VALUES_PER_BLOB
from chalicelib.observability.metrics import (
    latency_ms,
    metrics,
    record_run_outcome,
    record_sink_write,
)
from chalicelib.settings import Settings, get_settings
from localcloud.monitoring.emf_extraction import emf_metrics

ENTITIES = ("users", "tracks", "listen_history")


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """The EMF documents the recorder writes, instead of stdout."""
    monkeypatch.setenv("PIPELINE_TABLE_PREFIX", "moovitamix-test")
    get_settings.cache_clear()
    documents: list[dict] = []
    metrics.clear_metrics()
    monkeypatch.setattr(metrics, "output", lambda line: documents.append(json.loads(line)))
    yield documents
    metrics.clear_metrics()
    get_settings.cache_clear()


def totals(documents: list[dict]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sum of values per (metric, dimensions), as CloudWatch extracts them."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for document in documents:
        for _ns, name, dimensions, _unit, _moment, values in emf_metrics(document):
            key = (name, tuple(sorted(dimensions.items())))
            found[key] = found.get(key, 0.0) + sum(values)
    return found


def test_an_emf_document_names_namespace_dimensions_and_units(emitted: list[dict]) -> None:
    metrics.add_metric("RecordsQuarantined", 2, Entity="users", Step="load")
    metrics.flush_metrics()

    [document] = emitted
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["Pipeline", "Entity", "Step"], ["Pipeline"]]
    assert directive["Metrics"] == [{"Name": "RecordsQuarantined", "Unit": "Count"}]
    assert document["Pipeline"] == "moovitamix-test"
    assert (document["Entity"], document["Step"]) == ("users", "load")
    assert document["RecordsQuarantined"] == [2.0]
    assert "service" not in document  # no stray Powertools dimension: alarms match exactly


def test_counts_are_summed_and_distributions_keep_every_value(emitted: list[dict]) -> None:
    for _ in range(3):
        metrics.add_metric("RecordsFetched", 10, Entity="users")
        metrics.add_metric("FetchDuration", 1.5, Entity="users")
    metrics.flush_metrics()

    [document] = emitted
    assert document["RecordsFetched"] == [30.0]
    assert document["FetchDuration"] == [1.5, 1.5, 1.5]


def test_flush_forgets_what_it_wrote(emitted: list[dict]) -> None:
    metrics.add_metric("RecordsFetched", 1, Entity="users")
    metrics.flush_metrics()
    metrics.flush_metrics()
    assert len(emitted) == 1


@pytest.mark.parametrize(
    ("name", "dimensions"),
    [
        ("NoSuchMetric", {"Entity": "users"}),
        ("RecordsFetched", {}),
        ("RecordsWritten", {"Entity": "users"}),
        ("RecordsFetched", {"Entity": "users", "Sink": "dynamodb"}),
    ],
)
def test_an_uncatalogued_metric_or_dimension_set_is_refused(
    emitted: list[dict], name: str, dimensions: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match=r"CATALOGUE|takes dimensions"):
        metrics.add_metric(name, 1, **dimensions)


@settings(max_examples=40, deadline=None)
@given(
    values=st.dictionaries(
        st.sampled_from(ENTITIES),
        st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=350),
        max_size=3,
    )
)
def test_any_number_of_values_reaches_emf_exactly_once(values: dict[str, list[float]]) -> None:
    documents: list[dict] = []
    metrics.clear_metrics()
    previous = metrics.output
    metrics.output = lambda line: documents.append(json.loads(line))
    try:
        for entity, latencies in values.items():
            metrics.add_values("EndToEndLatency", latencies, Entity=entity, Sink="dynamodb")
        metrics.flush_metrics()
    finally:
        metrics.output = previous
    for document in documents:
        assert len(document["EndToEndLatency"]) <= MAX_VALUES_PER_BLOB
    extracted: dict[str, list[float]] = {}
    for document in documents:
        extracted.setdefault(document["Entity"], []).extend(document["EndToEndLatency"])
    assert extracted == {entity: vs for entity, vs in values.items() if vs}


def test_handlers_flush_their_metrics_even_when_they_raise(emitted: list[dict]) -> None:
    @metrics.log_metrics
    def handler(event: dict, context: object) -> None:
        metrics.add_metric("RecordsFetched", 5, Entity="tracks")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        handler({}, None)
    assert totals(emitted) == {
        ("RecordsFetched", (("Entity", "tracks"), ("Pipeline", "moovitamix-test"))): 5.0
    }


def test_a_sink_write_records_written_unchanged_duration_and_latency(
    emitted: list[dict],
) -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    envelopes = [
        Envelope(
            entity="users",
            run_id="r",
            fetched_at=(now - timedelta(seconds=seconds)).isoformat(),
            item={"id": seconds},
        )
        for seconds in (1, 2, 4)
    ]
    record_sink_write("users", "dynamodb", envelopes, written=2, duration_s=0.25, now=now)
    metrics.flush_metrics()

    [document] = emitted
    assert document["RecordsWritten"] == [2.0]
    assert document["RecordsUnchanged"] == [1.0]
    assert document["LoadDuration"] == [250.0]
    assert document["EndToEndLatency"] == [1000.0, 2000.0, 4000.0]


def test_latency_of_an_unparseable_or_naive_fetch_time() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert latency_ms("2026-01-01T11:59:59", now) == 1000.0
    assert latency_ms("yesterday", now) is None
    assert latency_ms("2026-01-01T12:00:05+00:00", now) == 0.0


def test_run_outcome_writes_verdict_difference_freshness_and_backlog(
    emitted: list[dict],
) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    record_run_outcome(
        succeeded=False,
        differences={"users": -3, "tracks": 0},
        quarantine_backlog=7,
        last_success_at=now - timedelta(hours=30),
        now=now,
    )
    found = totals(emitted)
    pipeline = ("Pipeline", "moovitamix-test")
    assert found[("RunSucceeded", (pipeline,))] == 0
    assert found[("RunFailed", (pipeline,))] == 1
    assert found[("ReconciliationDifference", (("Entity", "users"), pipeline))] == 3
    assert found[("ReconciliationDifference", (pipeline,))] == 3  # the roll-up
    assert found[("Freshness", (pipeline,))] == 30 * 3600
    assert found[("QuarantineBacklog", (pipeline,))] == 7


def test_freshness_is_not_invented_before_the_first_success(emitted: list[dict]) -> None:
    record_run_outcome(succeeded=False, differences={})
    assert not any(name == "Freshness" for name, _ in totals(emitted))


def test_every_catalogued_metric_has_a_valid_full_dimension_set() -> None:
    for spec in CATALOGUE.values():
        assert spec.dimensions[0] == "Pipeline"
        for rollup in spec.dimension_sets[1:]:
            assert set(rollup) < set(spec.dimensions), spec.name
        assert spec.summary in ("Sum", "Maximum")


def test_retried_api_requests_are_counted_by_status(
    emitted: list[dict], httpserver: HTTPServer
) -> None:
    answers = iter([Response("busy", status=503), Response("slow down", status=429)])
    httpserver.expect_request("/users").respond_with_handler(
        lambda request: next(answers, Response('{"ok": true}', content_type="application/json"))
    )
    session = build_session(
        Settings(api_url=httpserver.url_for("/"), backoff_factor_s=0, max_backoff_s=0.01)
    )
    assert session.get(httpserver.url_for("/users?page=1"), timeout=5).status_code == 200
    metrics.flush_metrics()

    found = totals(emitted)
    pipeline = ("Pipeline", "moovitamix-test")
    assert found[("ApiRetries", (("Entity", "users"), pipeline, ("Status", "503")))] == 1
    assert found[("ApiRetries", (("Entity", "users"), pipeline, ("Status", "429")))] == 1
    assert found[("ApiRetries", (("Entity", "users"), pipeline))] == 2


def test_exhausted_retries_are_not_counted_as_one_more(
    emitted: list[dict], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/tracks").respond_with_data("down", status=500)
    session = build_session(
        Settings(api_url=httpserver.url_for("/"), max_retries=2, backoff_factor_s=0)
    )
    assert session.get(httpserver.url_for("/tracks"), timeout=5).status_code == 500
    metrics.flush_metrics()
    found = totals(emitted)
    assert found[("ApiRetries", (("Entity", "tracks"), ("Pipeline", "moovitamix-test")))] == 2


def test_a_refused_connection_is_counted_as_connection(emitted: list[dict]) -> None:
    from localcloud.emulators.moto_process import free_port

    session = build_session(Settings(max_retries=1, backoff_factor_s=0))
    with pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{free_port()}/listen_history?page=1", timeout=2)
    metrics.flush_metrics()
    found = totals(emitted)
    key = (("Entity", "listen_history"), ("Pipeline", "moovitamix-test"), ("Status", "connection"))
    assert found[("ApiRetries", key)] == 1


def test_the_module_writes_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    recorder = metrics_module.PipelineMetrics()
    recorder.add_metric("RecordsFetched", 1, Entity="users")
    recorder.flush_metrics()
    line = capsys.readouterr().out.strip()
    assert json.loads(line)["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
