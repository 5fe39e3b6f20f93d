"""`infra.names` is the one formula behind every view of a stage's names.

The deploy (`StackSpec`), the Chalice stage (`Stage`) and the monitoring (`StageResources`)
each expose names; these tests prove they are the same names for every stage the Chalice
config ships, and that the config is read through `infra.chalice_config` consistently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import chalice_config, names
from infra.deploy import spec_for
from infra.stage import StageResources
from infra.stages import FUNCTIONS, Stage

STAGES = chalice_config.stage_names(chalice_config.read_config())


@pytest.mark.parametrize("stage_name", STAGES)
def test_every_view_of_a_stage_gives_the_same_names(stage_name: str) -> None:
    stage = Stage.load(stage_name)
    spec = spec_for(stage)
    resources = StageResources.from_settings(stage.settings, stage.name)
    for function in FUNCTIONS:
        assert stage.function_name(function) == spec.function_name(function)
        assert resources.functions[function] == spec.function_name(function)
        assert spec.function_name(function).startswith(f"{stage.app_name}-{stage.name}-")
    assert stage.rule_name("ingest") == spec.rule_name("ingest")
    assert resources.failure_queue == spec.failure_queue_name
    assert resources.work_dead_letter_queue == spec.work_dead_letter_queue_name
    assert resources.alarm_topic == spec.alarm_topic_name
    assert resources.work_queue == stage.settings.work_queue


def test_the_names_of_the_dev_stage() -> None:
    spec = spec_for(Stage.load("dev"))
    assert spec.function_name("load") == "moovitamix-pipeline-dev-load"
    assert spec.rule_name("ingest") == "moovitamix-pipeline-dev-ingest-event"
    assert spec.log_group("load") == "/aws/lambda/moovitamix-pipeline-dev-load"
    assert spec.failure_queue_name == "moovitamix-dev-load-failures"
    assert spec.work_dead_letter_queue_name == "moovitamix-dev-ingest-work-dlq"
    assert spec.postgres_secret_name == "moovitamix-dev/postgres"
    assert spec.alarm_topic_name == "moovitamix-dev-alarms"
    assert names.dashboard(spec.prefix) == "moovitamix-dev-pipeline"
    assert names.alarm_slug(spec.prefix, names.alarm_name(spec.prefix, "stale")) == "stale"


def test_stage_environment_merges_global_and_stage_variables(tmp_path: Path) -> None:
    config = {
        "app_name": "app",
        "environment_variables": {"A": "global", "B": 1},
        "stages": {"s": {"environment_variables": {"B": 2, "C": "stage"}}},
    }
    chalice_config.write_config(config, tmp_path)
    assert chalice_config.read_config(tmp_path) == config
    assert chalice_config.stage_environment("s", tmp_path) == {
        "A": "global",
        "B": "2",
        "C": "stage",
    }
    assert chalice_config.app_name(tmp_path) == "app"
    with pytest.raises(ValueError, match=r"unknown stage 'x' .*known: s"):
        chalice_config.stage_environment("x", tmp_path)
