"""`make security`'s dependency audit says what it audited, and fails only on what it knows.

pip-audit runs for real on a small hashed lock, against a fake OSV service on 127.0.0.1
(pytest-httpserver) that answers with no vulnerability, with one, with an error, or not at
all (a closed port). The wrapper must report the vulnerable package and exit 1; report a
complete clean audit and exit 0; and when the service cannot answer, print the INCOMPLETE
warning, never claim there are no vulnerabilities, and exit 2 only with AUDIT_REQUIRED=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from infra.stages import PROJECT_ROOT
from tests.helpers.factories import make_commands

LOCK = """\
# a two-package lock, as uv writes it
orjson==3.13.0 \\
    --hash=sha256:{a}
urllib3==2.8.0 \\
    --hash=sha256:{b}
""".format(a="a" * 64, b="b" * 64)

VULNERABILITY = {
    "id": "GHSA-test-0001",
    "aliases": ["CVE-2099-0001"],
    "summary": "made up for the test",
    "affected": [
        {
            "package": {"name": "urllib3", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.8.1"}]}],
        }
    ],
}


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(LOCK)
    return path


def audit(lock: Path, osv_url: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUDIT_REQUIRED"}
    env.update(environment)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.dependency_audit",
            str(lock),
            "--service",
            "osv",
            "--osv-url",
            osv_url,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def osv(vulnerable: set[str]) -> object:
    def answer(request: Request) -> Response:
        name = json.loads(request.data)["package"]["name"]
        body = {"vulns": [VULNERABILITY]} if name in vulnerable else {}
        return Response(json.dumps(body), content_type="application/json")

    return answer


def test_a_complete_clean_audit_passes(lock: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/query", method="POST").respond_with_handler(osv(set()))
    result = audit(lock, httpserver.url_for("/v1/query"))
    assert result.returncode == 0, result.stderr
    assert "requirements.txt: 2 of 2 packages audited (osv), 0 vulnerable, 0 not audited" in (
        result.stdout
    )
    assert "every locked package audited: no known vulnerabilities" in result.stdout
    assert "INCOMPLETE" not in result.stderr


def test_a_known_vulnerability_fails(lock: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/query", method="POST").respond_with_handler(osv({"urllib3"}))
    result = audit(lock, httpserver.url_for("/v1/query"))
    assert result.returncode == 1
    assert "1 vulnerable" in result.stdout
    assert "VULNERABLE urllib3==2.8.0: " in result.stdout
    assert "GHSA-test-0001" in result.stdout
    assert "CVE-2099-0001" in result.stdout
    assert "; fixed in 2.8.1" in result.stdout
    assert "no known vulnerabilities" not in result.stdout


@pytest.mark.parametrize("failure", ["server error", "closed port"])
def test_an_unreachable_service_is_reported_loudly_and_never_as_a_pass(
    lock: Path, httpserver: HTTPServer, failure: str
) -> None:
    if failure == "server error":
        httpserver.expect_request("/v1/query").respond_with_data("down", status=503)
        url = httpserver.url_for("/v1/query")
    else:
        url = "http://127.0.0.1:9/v1/query"  # discard port: nothing listens
    relaxed = audit(lock, url)
    assert relaxed.returncode == 0
    assert "WARNING: DEPENDENCY AUDIT INCOMPLETE" in relaxed.stderr
    assert "requirements.txt: osv:" in relaxed.stderr
    assert "0 of ? packages audited (osv), 0 vulnerable, all not audited" in relaxed.stdout
    assert "no known vulnerabilities" not in relaxed.stdout + relaxed.stderr.replace(
        "NOT known to be free of", ""
    )
    required = audit(lock, url, AUDIT_REQUIRED="1")
    assert required.returncode == 2
    assert "FAILED: AUDIT_REQUIRED=1 and the audit is incomplete" in required.stderr


def test_make_security_runs_bandit_and_the_audit_wrapper() -> None:
    dry_run = make_commands("-W", ".venv/.installed", "security")
    assert "bandit -q -c pyproject.toml -r ." in dry_run
    assert "-m infra.dependency_audit" in dry_run
    assert "pip-audit" not in dry_run  # never bare: its exit 0 does not mean audited
