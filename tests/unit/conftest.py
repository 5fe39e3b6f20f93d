"""The unit tier: pure code and in-process fakes, no emulated service (`make test-fast`).

The session's servers are refused here, so a test that needs one says so by failing at once
rather than slowing the fast tier down: it belongs in tests/integration.
"""

from __future__ import annotations

import pytest


def _refused(name: str) -> None:
    pytest.fail(f"a unit test uses no {name}: move the test to tests/integration", pytrace=False)


@pytest.fixture(scope="session")
def moto_server() -> None:
    _refused("moto server")


@pytest.fixture(scope="session")
def postgres_server() -> None:
    _refused("embedded PostgreSQL")
