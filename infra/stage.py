"""What the alarms and the dashboard watch in one stage, by name.

Alarms, the dashboard and the local cloud's emulation of AWS metrics all need the same names
(Lambda functions as Chalice names them, stream, tables, queue, topic); `StageResources`
collects them from `infra.spec.StackSpec`, whose formulas are `infra.names`'.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

from chalicelib.settings import Settings
from infra import chalice_config, names
from infra.names import FUNCTIONS
from infra.provision import TABLE_KEYS
from infra.spec import StackSpec

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}


@cache
def chalice_app_name() -> str:
    return chalice_config.app_name()


def schedule_interval_s(expression: str) -> int:
    """Seconds between two runs of an EventBridge schedule.

    `rate(...)` is exact; a `cron(...)` expression is taken as daily (the pipeline's schedule),
    so a stage with another cron cadence must pass `stale_after_s` to the alarms.
    """
    match = _RATE.match(expression.strip())
    if match:
        return int(match.group(1)) * _UNIT_S[match.group(2).rstrip("s")]
    if expression.strip().startswith("cron("):
        return 86400
    raise ValueError(f"not an EventBridge schedule expression: {expression!r}")


@dataclass(frozen=True)
class StageResources:
    """What the alarms and the dashboard watch in one stage."""

    stage: str
    prefix: str
    functions: dict[str, str]
    stream: str
    tables: tuple[str, ...]
    quarantine_bucket: str
    failure_queue: str
    work_queue: str
    work_dead_letter_queue: str
    alarm_topic: str
    dashboard: str
    entities: tuple[str, ...]
    sinks: tuple[str, ...]
    schedule_s: int

    @classmethod
    def from_settings(cls, settings: Settings, stage: str) -> StageResources:
        spec = StackSpec(settings, stage=stage, app_name=chalice_app_name())
        return cls(
            stage=stage,
            prefix=spec.prefix,
            functions={name: spec.function_name(name) for name in FUNCTIONS},
            stream=settings.stream_name,
            tables=tuple(settings.table_name(suffix) for suffix in TABLE_KEYS),
            quarantine_bucket=settings.quarantine_bucket,
            failure_queue=spec.failure_queue_name,
            work_queue=spec.work_queue_name,
            work_dead_letter_queue=spec.work_dead_letter_queue_name,
            alarm_topic=spec.alarm_topic_name,
            dashboard=names.dashboard(spec.prefix),
            entities=tuple(settings.resource_list),
            sinks=tuple(settings.sink_list),
            schedule_s=schedule_interval_s(settings.schedule),
        )

    def alarm_name(self, slug: str) -> str:
        return names.alarm_name(self.prefix, slug)

    def stale_after_s(self, margin_s: int) -> int:
        """No successful run for this long means the pipeline is stale."""
        return int(math.ceil((self.schedule_s + margin_s) / 60.0) * 60)
