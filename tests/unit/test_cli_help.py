"""`--help` texts keep their example lines, and the Chalice config holds nothing for an API.

argparse's default formatter re-flows a description into one paragraph, which glued
`infra.policies`'s two example commands into one line; and `api_gateway_stage` configured a
REST API this app does not have (it has no route, only scheduled, stream and queue handlers).
"""

from __future__ import annotations

import json

import pytest

from infra import policies
from infra.stages import PROJECT_ROOT


def test_the_policies_help_keeps_each_example_on_its_own_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        policies.main(["--help"])
    assert exit_info.value.code == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    write = next(line for line in lines if line.startswith("python -m infra.policies "))
    check = next(line for line in lines if line.startswith("python -m infra.policies --check"))
    assert write != check
    assert "--check" not in write
    assert write.endswith("# (re)write every policy file")
    assert check.endswith("# exit 1 when a file is missing or stale (CI, tests)")


def test_the_chalice_config_configures_no_api() -> None:
    config = json.loads((PROJECT_ROOT / ".chalice" / "config.json").read_text())
    scopes = [config, *config["stages"].values()]
    for scope in scopes:
        assert "api_gateway_stage" not in scope
        assert "api_gateway_endpoint_type" not in scope
    app_source = (PROJECT_ROOT / "app.py").read_text()
    assert "@app.route" not in app_source
