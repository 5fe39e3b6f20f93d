"""Where the local cloud's functions run: the Lambda service and each function's context.

`LambdaService` runs each deployed function in warm worker processes of its own (the
commands) or as threads of the cloud's process (tests that hook the handlers); every handler
gets a context with its deployed name, memory and timeout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from chalicelib.observability.metrics import metrics
from localcloud.chaos import Chaos
from localcloud.deployment import DeployedStage
from localcloud.monitoring import LocalMonitoring
from localcloud.stack.environment import REGION
from localcloud.triggers.lambda_runtime import LambdaContext
from localcloud.triggers.lambda_service import FUNCTIONS, LambdaService


def function_context(deployed: DeployedStage, function: str) -> Callable[[int], LambdaContext]:
    """Contexts of the deployed function: its name, memory and timeout."""
    configuration = deployed.function(function)
    return lambda _number: LambdaContext(
        configuration.name,
        memory_limit_in_mb=configuration.memory_mb,
        timeout_s=configuration.timeout_s,
        region=REGION,
    )


def lambda_service(
    deployed: DeployedStage,
    *,
    processes: bool,
    state_dir: Path,
    monitoring: LocalMonitoring,
    environments: dict[str, dict[str, str]],
    chaos: Chaos | None,
) -> LambdaService:
    """The deployed functions' Lambda service: worker processes (`processes`) or this one."""
    return LambdaService(
        processes=processes,
        state_dir=state_dir,
        names={function: deployed.function(function).name for function in FUNCTIONS},
        contexts={
            function: functools.partial(function_context(deployed, function), 1)
            for function in FUNCTIONS
        },
        instrument=monitoring.instrument,
        emf_output=lambda line: metrics.output(line),
        environments=environments,
        chaos=chaos,
    )
