"""Tests of the fake MooVitamix API: contract, pagination, data properties, quirks, faults.

Most checks go over real HTTP (the venv has no httpx, so no TestClient), which also tests
`FakeApiServer`; the arithmetic and the generators are checked directly with hypothesis.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chalicelib.model.contract import ENTITIES, entity_key, parse_timestamp, validate_item
from localcloud.fakeapi import (
    ANCHOR,
    HOSTILE_STRINGS,
    FakeApiServer,
    FaultInjector,
    build_app,
    generate_item,
    id_for_index,
    iter_items,
    page_body,
)
from localcloud.fakeapi.faults import poison_variants

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 1000


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(records=RECORDS, seed=0) as server:
        yield server


@pytest.fixture(scope="module")
def odd_api() -> Iterator[FakeApiServer]:
    with FakeApiServer(records=1001, seed=5) as server:
        yield server


@pytest.fixture(scope="module")
def served(api: FakeApiServer, http: requests.Session) -> dict[str, list[Any]]:
    """Every item of every resource of the default server, fetched page by page."""
    return {entity: fetch_all(http, api.url, entity) for entity in ENTITIES}


def fetch_all(http: requests.Session, url: str, entity: str, size: int = 100) -> list[Any]:
    """Scan like a client: follow `pages`, and check the envelope on the way."""
    items: list[Any] = []
    page, pages = 1, 1
    while page <= pages:
        response = http.get(f"{url}/{entity}", params={"page": page, "size": size}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body) == ["items", "total", "page", "size", "pages"]
        assert (body["page"], body["size"]) == (page, size)
        pages = body["pages"]
        items.extend(body["items"])
        page += 1
    return items


def text_values(items: list[dict[str, Any]]) -> list[str]:
    return [value for item in items for value in item.values() if isinstance(value, str)]


# --- the contract's surface ------------------------------------------------------------------


def test_app_metadata_and_root_redirect(api: FakeApiServer, http: requests.Session) -> None:
    app = build_app()
    assert (app.title, app.version, app.description) == (
        "MooVitamix",
        "1.1",
        "A music recommendation system",
    )
    schema = http.get(f"{api.url}/openapi.json", timeout=10).json()
    assert {"/users", "/tracks", "/listen_history"} <= set(schema["paths"])
    params = {p["name"]: p["schema"] for p in schema["paths"]["/users"]["get"]["parameters"]}
    assert params["page"]["minimum"] == 1
    assert (params["size"]["minimum"], params["size"]["maximum"]) == (1, 100)
    root = http.get(f"{api.url}/", allow_redirects=False, timeout=10)
    assert root.status_code == 307
    assert root.headers["location"] == "/docs"
    assert http.get(f"{api.url}/docs", timeout=10).status_code == 200


def test_default_page_and_size(api: FakeApiServer, http: requests.Session) -> None:
    body = http.get(f"{api.url}/tracks", timeout=10).json()
    assert {k: body[k] for k in ("total", "page", "size", "pages")} == {
        "total": 1000,
        "page": 1,
        "size": 100,
        "pages": 10,
    }
    assert body["items"] == [generate_item("tracks", i, RECORDS, 0) for i in range(100)]


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_served_item_validates_and_matches_iter_items(
    served: dict[str, list[Any]], entity: str
) -> None:
    items = served[entity]
    assert len(items) == RECORDS
    for item in items:
        assert validate_item(entity, item) == item  # exactly the contract's fields, as served
    assert items == list(iter_items(entity, RECORDS, 0))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"size": 0}, "size"),
        ({"size": 101}, "size"),
        ({"page": 0}, "page"),
        ({"page": -3}, "page"),
        ({"page": "abc"}, "page"),
    ],
)
def test_out_of_range_query_answers_fastapi_422(
    api: FakeApiServer, http: requests.Session, query: dict[str, Any], field: str
) -> None:
    response = http.get(f"{api.url}/users", params=query, timeout=10)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail[0]["loc"] == ["query", field]


# --- pagination ---------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "pages", "last"), [(7, 143, 7), (6, 167, 5), (100, 11, 1)])
def test_pagination_with_an_odd_total(
    odd_api: FakeApiServer, http: requests.Session, size: int, pages: int, last: int
) -> None:
    url = f"{odd_api.url}/listen_history"
    body = http.get(url, params={"page": pages, "size": size}, timeout=10).json()
    assert (body["total"], body["pages"], len(body["items"])) == (1001, pages, last)
    past = http.get(url, params={"page": pages + 1, "size": size}, timeout=10)
    assert past.status_code == 200
    assert past.json() == {
        "items": [],
        "total": 1001,
        "page": pages + 1,
        "size": size,
        "pages": pages,
    }
    assert fetch_all(http, odd_api.url, "listen_history", size) == list(
        iter_items("listen_history", 1001, 5)
    )


def test_page_far_past_the_end_is_empty(api: FakeApiServer, http: requests.Session) -> None:
    body = http.get(f"{api.url}/users", params={"page": 10**6}, timeout=10).json()
    assert body == {"items": [], "total": 1000, "page": 10**6, "size": 100, "pages": 10}


@settings(max_examples=80, deadline=None)
@given(
    entity=st.sampled_from(ENTITIES),
    records=st.integers(0, 700),
    size=st.integers(1, 100),
    page=st.integers(1, 30),
)
def test_page_arithmetic(entity: str, records: int, size: int, page: int) -> None:
    body = page_body(entity, page, size, records, seed=1)
    start = (page - 1) * size
    assert body["pages"] == math.ceil(records / size)
    assert len(body["items"]) == max(0, min(size, records - start))
    assert body["items"] == [
        generate_item(entity, start + k, records, 1) for k in range(len(body["items"]))
    ]
    assert (body["total"], body["page"], body["size"]) == (records, page, size)


# --- data properties --------------------------------------------------------------------------


def test_ids_unique_and_in_range(served: dict[str, list[Any]]) -> None:
    for entity in ("users", "tracks"):
        ids = [item["id"] for item in served[entity]]
        assert len(set(ids)) == RECORDS
        assert all(1 <= i <= 100_000 for i in ids)
    assert [u["id"] for u in served["users"]] != [t["id"] for t in served["tracks"]]


@pytest.mark.parametrize(("records", "seed"), [(100_000, 0), (100_000, 9), (130_003, 4)])
def test_ids_are_a_permutation_of_the_whole_range(records: int, seed: int) -> None:
    ids = {id_for_index("tracks", index, records, seed) for index in range(records)}
    assert ids == set(range(1, records + 1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), records=st.integers(1, 3000))
def test_ids_unique_for_any_seed(seed: int, records: int) -> None:
    for entity in ("users", "tracks"):
        ids = [id_for_index(entity, index, records, seed) for index in range(records)]
        assert len(set(ids)) == records
        assert min(ids) >= 1
        assert max(ids) <= max(100_000, records)


@pytest.mark.parametrize(("records", "seed"), [(RECORDS, 0), (RECORDS, 7), (5000, 3), (3, 1)])
def test_listen_history_references_and_keys(records: int, seed: int) -> None:
    users = {item["id"] for item in iter_items("users", records, seed)}
    tracks = {item["id"] for item in iter_items("tracks", records, seed)}
    history = list(iter_items("listen_history", records, seed))
    assert len(history) == records
    keys = [entity_key("listen_history", row) for row in history]
    assert len(set(keys)) == records
    for row in history:
        assert row["user_id"] in users
        assert len(row["items"]) == min(5, records)
        assert len(set(row["items"])) == len(row["items"])
        assert set(row["items"]) <= tracks
        assert parse_timestamp(row["updated_at"]) >= parse_timestamp(row["created_at"])


def test_several_history_rows_for_some_users(served: dict[str, list[Any]]) -> None:
    rows = Counter(row["user_id"] for row in served["listen_history"])
    multi = [user for user, count in rows.items() if count > 1]
    assert 3 <= len(multi) <= 60
    # the items keep their served (random) order: not sorted
    assert any(row["items"] != sorted(row["items"]) for row in served["listen_history"])


def test_timestamp_quirks_occur(served: dict[str, list[Any]]) -> None:
    for entity in ENTITIES:
        stamps = [item[k] for item in served[entity] for k in ("created_at", "updated_at")]
        whole = [s for s in stamps if "." not in s]
        assert 20 <= len(whole) <= 200, entity  # deliberately ~1 item in 20
        for stamp in stamps:
            parsed = parse_timestamp(stamp)
            assert parsed.tzinfo is None
            assert parsed.isoformat() == stamp
            assert ANCHOR - timedelta(days=730) <= parsed <= ANCHOR
    for entity in ("users", "tracks"):
        earlier = [
            i
            for i in served[entity]
            if parse_timestamp(i["updated_at"]) < parse_timestamp(i["created_at"])
        ]
        assert earlier, entity


def test_hostile_strings_occur_and_survive_http(served: dict[str, list[Any]]) -> None:
    for entity in ("users", "tracks"):
        values = text_values(served[entity])
        for hostile in HOSTILE_STRINGS:
            assert hostile in values, (entity, hostile[:30])
        hostile_items = [i for i in served[entity] if set(i.values()) & set(HOSTILE_STRINGS)]
        assert 10 <= len(hostile_items) <= 30  # 1 in 40
    everything = [v for items in served.values() for v in text_values(items)]
    assert not any("\x00" in value for value in everything)
    assert any(len(value) == 2000 for value in everything)
    assert any("DROP TABLE" in v for v in everything)
    assert any("\u200d" in v for v in everything)
    assert any("🎵" in v for v in everything)
    assert any(v != v.strip() for v in everything)


def test_durations_and_genres(served: dict[str, list[Any]]) -> None:
    durations = {t["duration"] for t in served["tracks"]}
    assert all(len(d) == 5 and d[2] == ":" for d in durations)
    assert len({t["genres"] for t in served["tracks"]}) > 50  # a free word, not the genre list


def test_same_seed_same_data_other_seed_other_data() -> None:
    for entity in ENTITIES:
        first = [generate_item(entity, i, RECORDS, 11) for i in range(50)]
        assert first == [generate_item(entity, i, RECORDS, 11) for i in range(50)]
        assert first != [generate_item(entity, i, RECORDS, 12) for i in range(50)]
    assert {id_for_index("users", i, RECORDS, 11) for i in range(RECORDS)} != {
        id_for_index("users", i, RECORDS, 12) for i in range(RECORDS)
    }


def test_deterministic_across_processes() -> None:
    """Seeding must not depend on Python's salted hash(): another process, same data."""
    code = (
        "import json; from localcloud.fakeapi import generate_item as g; "
        "print(json.dumps([g(e, i, 1000, 3) for e in ('users', 'tracks', 'listen_history') "
        "for i in (0, 1, 999)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    expected = [generate_item(e, i, 1000, 3) for e in ENTITIES for i in (0, 1, 999)]
    assert json.loads(out) == expected


def test_generation_is_lazy() -> None:
    """Ten million rows per resource cost no memory until served (speed is in bench/)."""
    assert not isinstance(iter_items("users", 10**7, 0), list)
    tracemalloc.start()
    try:
        for entity in ENTITIES:
            item = generate_item(entity, 5_000_000, 10_000_000, 0)
            validate_item(entity, item)
        for page in range(1000, 1010):
            body = page_body("listen_history", page, 100, 10_000_000, 0)
            assert len(body["items"]) == 100
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024  # a few pages' worth, never the data set
    assert max(r["user_id"] for r in body["items"]) > 100_000


def test_generate_item_rejects_bad_arguments() -> None:
    with pytest.raises(KeyError):
        generate_item("albums", 0, 10, 0)
    with pytest.raises(IndexError):
        generate_item("users", 10, 10, 0)
    with pytest.raises(IndexError):
        generate_item("users", -1, 10, 0)


# --- faults -----------------------------------------------------------------------------------


def test_request_faults_fire_at_the_configured_rate() -> None:
    faults = FaultInjector({"api-5xx": 0.1, "api-429": 0.05, "api-timeout": 0.02}, seed=3)
    draws = [faults.decide_request() for _ in range(20_000)]
    seen = Counter(d.name for d in draws if d is not None)
    assert dict(seen) == {k: v for k, v in faults.injected.items() if v}
    for name, p in (("api-5xx", 0.1), ("api-429", 0.05), ("api-timeout", 0.02)):
        sd = math.sqrt(20_000 * p * (1 - p))
        assert abs(seen[name] - 20_000 * p) < 5 * sd, name
    assert {d.status_code for d in draws if d is not None and d.name == "api-5xx"} == {500, 503}
    assert faults.injected["poison"] == 0


def test_fault_injector_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown"):
        FaultInjector({"api-404": 0.1})
    with pytest.raises(ValueError, match="within"):
        FaultInjector({"poison": 1.5})
    with pytest.raises(ValueError, match="more than 1"):
        FaultInjector({"api-5xx": 0.6, "api-429": 0.6})
    assert FaultInjector.parse(["api-5xx=0.25", "poison=0.1"]).probabilities == {
        "api-5xx": 0.25,
        "poison": 0.1,
    }


def test_http_faults_are_served_and_counted(http: requests.Session) -> None:
    faults = FaultInjector({"api-5xx": 0.2, "api-429": 0.2}, seed=1, retry_after=0)
    statuses: Counter[int] = Counter()
    with FakeApiServer(records=50, faults=faults) as server:
        for _ in range(200):
            response = http.get(f"{server.url}/users", params={"size": 10}, timeout=10)
            statuses[response.status_code] += 1
            if response.status_code == 429:
                assert response.headers["Retry-After"] == "0"
            elif response.status_code == 200:
                assert len(response.json()["items"]) == 10
        # invalid queries are refused before any fault is drawn
        assert http.get(f"{server.url}/users", params={"size": 0}, timeout=10).status_code == 422
    assert statuses[500] + statuses[503] == faults.injected["api-5xx"]
    assert statuses[429] == faults.injected["api-429"]
    assert statuses[200] == 200 - faults.injected["api-5xx"] - faults.injected["api-429"]
    assert 15 <= faults.injected["api-5xx"] <= 70
    assert 15 <= faults.injected["api-429"] <= 70


def test_timeout_fault_stalls_then_answers(http: requests.Session) -> None:
    faults = FaultInjector({"api-timeout": 1.0}, timeout_delay=0.4)
    with FakeApiServer(records=10, faults=faults) as server:
        with pytest.raises(requests.ReadTimeout):
            http.get(f"{server.url}/tracks", timeout=(2, 0.1))
        start = time.perf_counter()
        response = http.get(f"{server.url}/tracks", timeout=5)
        assert time.perf_counter() - start >= 0.35
        assert response.status_code == 200
        assert len(response.json()["items"]) == 10
    assert faults.injected["api-timeout"] == 2


def test_poison_is_deterministic_per_item_and_invalid(http: requests.Session) -> None:
    faults = FaultInjector({"poison": 0.05}, seed=4)
    with FakeApiServer(records=RECORDS, seed=2, faults=faults) as server:
        served = {e: fetch_all(http, server.url, e) for e in ENTITIES}
        again = http.get(f"{server.url}/users", params={"page": 3}, timeout=10).json()
    assert again["items"] == served["users"][200:300]
    poisoned = 0
    for entity, items in served.items():
        for index, item in enumerate(items):
            expected = generate_item(entity, index, RECORDS, 2)
            if faults.is_poisoned(entity, index):
                poisoned += 1
                with pytest.raises(ValidationError):
                    validate_item(entity, item)
            else:
                assert item == expected
    assert 0.02 * 3 * RECORDS <= poisoned <= 0.09 * 3 * RECORDS
    poisoned_page_3 = sum(faults.is_poisoned("users", i) for i in range(200, 300))
    assert faults.injected["poison"] == poisoned + poisoned_page_3
    assert faults.injected["api-5xx"] == faults.injected["api-429"] == 0


@settings(max_examples=60, deadline=None)
@given(entity=st.sampled_from(ENTITIES), index=st.integers(0, 999), seed=st.integers(0, 10**6))
def test_every_poison_variant_fails_validation(entity: str, index: int, seed: int) -> None:
    item = generate_item(entity, index, RECORDS, seed)
    for variant in poison_variants(entity, item):
        with pytest.raises(ValidationError):
            validate_item(entity, variant)
    faults = FaultInjector({"poison": 1.0}, seed=seed)
    assert faults.is_poisoned(entity, index)
    assert faults.poison_item(entity, index, item) == faults.poison_item(entity, index, item)
    assert FaultInjector({"poison": 0.0}).is_poisoned(entity, index) is False


# --- the server and the CLI --------------------------------------------------------------------


def test_server_lifecycle(http: requests.Session) -> None:
    server = FakeApiServer(records=3)
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    try:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        body = http.get(f"{server.url}/listen_history", timeout=10).json()
        assert body["total"] == 3
        assert len(body["items"]) == 3
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/users", timeout=2)


def test_cli_serves_in_the_foreground() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    help_text = subprocess.run(
        [sys.executable, "-m", "localcloud.fakeapi", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--records" in help_text
    assert "--seed" in help_text
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "localcloud.fakeapi", "--records", "12", "--seed", "4"),
            *("--port", str(port), "--log-level", "warning"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/users", timeout=2).json()
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr and process.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert body["total"] == 12
        assert body["items"] == list(iter_items("users", 12, 4))
    finally:
        process.terminate()
        process.wait(timeout=10)
