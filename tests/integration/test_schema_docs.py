"""docs/schema.md stays true: its example queries run, its settings exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.settings import Settings
from tests.helpers.postgres_helpers import connect, envelope, load_known_dataset, make_sink, track

DOC = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text()
QUERIES = re.findall(r"```sql\n(.*?)```", DOC, flags=re.DOTALL)


@pytest.fixture(scope="module")
def queries() -> list[str]:
    assert len(QUERIES) >= 5
    return QUERIES


def test_example_queries_run_and_answer(
    postgres_credentials: Credentials, queries: list[str]
) -> None:
    load_known_dataset(make_sink(postgres_credentials))
    with connect(postgres_credentials) as connection:
        answers = [connection.execute(query.encode()).fetchall() for query in queries]
    popular, matrix, summary, candidates, together = answers
    assert [row[0] for row in popular] == [12, 11, 10, 13]
    assert (1, 10, 3) in matrix
    assert len(matrix) == 5
    assert summary[0][:3] == (1, "Rock", "rock")
    assert candidates == []  # user 1 has heard every rock and jazz track of the dataset
    assert together == [(10, 12, 2), (11, 12, 2), (10, 11, 1)]


def test_candidates_query_finds_unheard_tracks(postgres_credentials: Credentials) -> None:
    sink = make_sink(postgres_credentials)
    load_known_dataset(sink)
    sink.write("tracks", [envelope("tracks", track(14, genres="jazz", name="Fourteen"))])
    with connect(postgres_credentials) as connection:
        rows = connection.execute(QUERIES[3].encode()).fetchall()
    assert rows == [(14, "Fourteen", "jazz", 0)]


def test_documented_settings_exist() -> None:
    documented = set(re.findall(r"`PIPELINE_([A-Z0-9_]+)`", DOC))
    fields = {name.upper() for name in Settings.model_fields}
    assert documented <= fields
    assert {
        "POSTGRES_SECRET_ARN",
        "POSTGRES_DSN",
        "POSTGRES_SSLMODE",
        "POSTGRES_CONNECT_TIMEOUT_S",
        "EVENT_BUS_NAME",
    } <= documented


def test_documented_views_exist(postgres_credentials: Credentials) -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \| ", DOC, flags=re.MULTILINE))
    make_sink(postgres_credentials).count("users")  # migrates
    with connect(postgres_credentials) as connection:
        views = {
            name
            for (name,) in connection.execute(
                "SELECT viewname FROM pg_views WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert views <= documented
