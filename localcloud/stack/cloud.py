"""The embedded local cloud: moto for AWS, a fake MooVitamix API, and the Lambda driver.

`LocalCloud` starts the services, deploys the `local` stage of `.chalice/config.json` into moto
through the deploy code (`localcloud/deployment.py`: infrastructure, functions, schedules,
mappings, alarms, dashboard), reads back what was deployed, starts the functions with their
deployed environment (plus what the Lambda runtime adds: the endpoint, region, credentials)
and runs the pipeline by calling the Chalice handlers exactly as Lambda would, with the
deployed settings. It holds no pipeline logic: the verdict, the run-outcome metrics and the
DatasetUpdated event come from the reconcile function, which the cloud fires through its
schedule after each run and whose verdict it reads back from the runs table
(`localcloud/run_report.py` builds the run's report; `localcloud/run_progress.py` its live
progress). `LocalMonitoring` turns the handlers' EMF lines into metrics and evaluates the
alarms (see localcloud/monitoring/).

This module holds the cloud's state and its lifecycle; each concern is a module of its own:
`environment.py` (this process's environment), `database.py` (its PostgreSQL), `stage.py`
(the deploy and what is read back), `functions.py` (where the functions run), `run.py` (one
run, the redrive) and `inspection.py` (what the stores hold).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from chalicelib.deadletter.redrive import RedriveReport
from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.observability.logging import SERVICE
from chalicelib.settings import Settings, get_settings
from infra import names
from infra.provision import Provisioned
from infra.stages import Stage
from infra.trigger import KinesisEventSourceSettings
from localcloud.chaos import Chaos
from localcloud.deployment import DeployedStage, read_deployed
from localcloud.emulators.moto_process import MotoServer
from localcloud.emulators.postgres import EmbeddedPostgres
from localcloud.events import EventCapture
from localcloud.fakeapi import FakeApiServer
from localcloud.monitoring import LocalMonitoring
from localcloud.run_progress import ProgressCallback
from localcloud.run_report import RunReport
from localcloud.stack import inspection, run, stage
from localcloud.stack.database import CloudDatabase
from localcloud.stack.environment import (
    MOTO_CREDENTIAL,
    REGION,
    ProcessEnvironment,
    function_environment,
)
from localcloud.stack.functions import lambda_service
from localcloud.triggers.lambda_service import FUNCTIONS, LambdaService

__all__ = ["MOTO_CREDENTIAL", "REGION", "LocalCloud"]


class LocalCloud:
    """Context manager owning the embedded services for one or more runs."""

    def __init__(
        self,
        state_dir: Path,
        *,
        api_url: str | None = None,
        records: int = 1000,
        seed: int = 0,
        shard_count: int = 2,
        extra_env: dict[str, str] | None = None,
        postgres: EmbeddedPostgres | None = None,
        chaos: Chaos | None = None,
        event_source: KinesisEventSourceSettings | None = None,
        workers: int = 2,
        function_processes: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.function_processes = function_processes
        """Run each function in warm worker processes (`localcloud.triggers.lambda_service`), as the
        command does; False runs them as threads of this process (tests that hook them)."""
        self._service: LambdaService | None = None
        self._service_environment: dict[str, dict[str, str]] = {}
        self.api_url = api_url
        self.records = records
        self.seed = seed
        self.shard_count = shard_count
        self.extra_env = {**(chaos.environment() if chaos else {}), **(extra_env or {})}
        self.chaos = chaos
        self.event_source = event_source
        self.workers = workers
        """Concurrent fan-out workers (the ingest_worker SQS trigger's concurrency)."""
        self.positions: dict[str, str] = {}
        """Where the load trigger stopped on each shard: the next drain continues there."""
        self.moto = MotoServer(state_dir / "moto.log")
        self.fake_api: FakeApiServer | None = None
        self.provisioned: Provisioned | None = None
        self.environment = ProcessEnvironment()
        """This process's own environment while the cloud is up (why: stack/environment.py)."""
        self.started_s = 0.0
        # PostgreSQL: our own embedded server, or a running one given by the caller (tests)
        self.database = CloudDatabase(postgres)
        self.events: EventCapture | None = None
        self.monitoring = LocalMonitoring(state_dir)
        self.deployed: DeployedStage | None = None
        self.stage: Stage | None = None
        self.attached: dict[str, Any] | None = None
        """The state of a running cloud (`localcloud up`) this one works on, instead of its own."""

    @classmethod
    def attach(
        cls,
        state: dict[str, Any],
        *,
        chaos: Chaos | None = None,
        workers: int = 2,
        function_processes: bool = False,
    ) -> LocalCloud:
        """A cloud that runs the pipeline on the services of a running `localcloud up` (its
        state file's content): it starts and stops nothing, and continues the load trigger
        where the previous run stopped."""
        cloud = cls(
            Path(state["state_dir"]),
            api_url=state["api_url"],
            chaos=chaos,
            workers=workers,
            function_processes=function_processes,
        )
        cloud.attached = state
        cloud.positions = dict(state.get("positions", {}))
        cloud.database.owns_server = False
        return cloud

    @property
    def postgres(self) -> EmbeddedPostgres | None:
        return self.database.server

    @property
    def postgres_database(self) -> str | None:
        return self.database.name

    @property
    def postgres_credentials(self) -> Credentials | None:
        return self.database.credentials

    def processes(self) -> dict[str, Any]:
        """The processes this cloud started: `down` stops what a crashed `up` left behind."""
        found: dict[str, Any] = {}
        if self.moto.pid is not None:
            found["moto"] = self.moto.pid
        found.update(self.database.processes())
        return found

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalCloud:
        if self.attached is not None:
            return self._enter_attached(self.attached)
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        wants_postgres = stage.wants_postgres(self.extra_env)
        self.database.start(wants_postgres)
        try:
            self.moto.start()
            api_url = self.api_url
            if api_url is None:
                self.fake_api = FakeApiServer(
                    records=self.records,
                    seed=self.seed,
                    faults=self.chaos.api_injector if self.chaos else None,
                )
                self.fake_api.start()
                api_url = self.fake_api.url
            self.environment.apply_runtime(self.moto.url)
            self.stage, self.provisioned = stage.deploy(
                self.state_dir, stage.stage_variables(api_url, self.shard_count, self.extra_env)
            )
            self.read_deployment()
            self.database.prepare(
                wants_postgres, names.postgres_secret(self.stage.settings.table_prefix)
            )
            self._apply_deployed_environment()
            admin_dsn = self.database.admin_dsn()
            if self.chaos is not None and admin_dsn is not None:
                # postgres-disconnect terminates the sink's sessions through this admin DSN
                self.chaos.postgres_dsn = admin_dsn
            self.events = EventCapture(
                names.event_capture(self.settings.table_prefix), self.settings.event_bus_name
            ).start()
            self.monitoring.start(self.settings)
            self._route_logs()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.started_s = time.monotonic() - started
        (self.state_dir / "processes.json").write_text(orjson.dumps(self.processes()).decode())
        return self

    def _enter_attached(self, state: dict[str, Any]) -> LocalCloud:
        started = time.monotonic()
        try:
            self.moto = MotoServer.running(state["aws_endpoint"])
            self.environment.apply_runtime(self.moto.url)
            self.stage, self.provisioned = stage.attached_stage(state)
            self.read_deployment()
            self._apply_deployed_environment()
            self.events = EventCapture(
                names.event_capture(self.settings.table_prefix), self.settings.event_bus_name
            ).start()
            self.monitoring.start(self.settings)
            self.monitoring.started_at = datetime.fromisoformat(state["started_at"])
            self._route_logs()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.started_s = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._service is not None:
            interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
            self._service.close(interrupted=interrupted)
            self._service = None
        if self.fake_api is not None:
            self.fake_api.stop()
            self.fake_api = None
        self.monitoring.stop()
        self.moto.stop()
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            # interrupted, the process ends now (`localcloud.cli`): the drivers' threads keep
            # the emulator's endpoint and never fall back to a real account's
            self.environment.restore()
        self.database.stop()

    @property
    def settings(self) -> Settings:
        return get_settings()

    def _route_logs(self) -> None:
        """Lambda logs go to a file in the state dir, not to the terminal."""
        pipeline_logger = logging.getLogger(SERVICE)
        formatter = pipeline_logger.handlers[0].formatter if pipeline_logger.handlers else None
        file_handler = logging.FileHandler(self.state_dir / "lambda.log", encoding="utf-8")
        file_handler.setFormatter(formatter or logging.Formatter())
        pipeline_logger.handlers = [file_handler]
        pipeline_logger.propagate = False

    @property
    def log_path(self) -> Path:
        return self.state_dir / "lambda.log"

    # -- the deployment ----------------------------------------------------------------------

    def read_deployment(self) -> DeployedStage:
        """What the drivers emulate, read back from the emulator (after any change to it)."""
        assert self.stage is not None
        self.deployed = read_deployed(self.stage)
        return self.deployed

    def apply_deployment(self) -> DeployedStage:
        """Read the deployment back; a function reconfigured since (UpdateFunctionConfiguration)
        runs with its new environment from now on. Each run starts with this."""
        deployed = self.read_deployment()
        if not self.environment.runs_with(self._own_environment()):
            self._apply_deployed_environment()
        return deployed

    def function_environment(self, function: str | None = None) -> dict[str, str]:
        """The environment `function`'s processes are started with (`function_environment`):
        its deployed environment; without a function, the one every function has."""
        assert self.deployed is not None
        return function_environment(self.moto.url, self.deployed.environment(function))

    def _own_environment(self) -> dict[str, str]:
        """This process's function environment: with worker processes (each gets its own
        function's) the reconcile function's, whose verdict and outcome it reads back; as
        threads of this process, the one every function must share."""
        assert self.deployed is not None
        return self.deployed.environment("reconcile" if self.function_processes else None)

    def _apply_deployed_environment(self) -> None:
        self.environment.apply_deployed(self._own_environment())

    def mapping_settings(self) -> KinesisEventSourceSettings:
        """The load trigger's settings as deployed (read back from the emulator)."""
        return stage.mapping_settings(self.read_deployment())

    def apply_event_source(self) -> None:
        """`event_source` given: change the deployed mapping to it, as an operator would with
        UpdateEventSourceMapping (settings it leaves out keep their deployed value)."""
        if self.event_source is None:
            return
        stage.update_event_source(self.read_deployment(), self.event_source)
        self.event_source = None

    def lambda_service(self) -> LambdaService:
        """Where the functions run: worker processes (`function_processes`) or this process.

        Each function's processes get its own deployed environment explicitly
        (`function_environment`). Made once per cloud (warm across runs); made anew when a
        function's deployed environment changed since."""
        assert self.deployed is not None
        environments = {function: self.function_environment(function) for function in FUNCTIONS}
        if self._service is not None and self._service_environment != environments:
            self._service.close()
            self._service = None
        if self._service is None:
            self._service = lambda_service(
                self.deployed,
                processes=self.function_processes,
                state_dir=self.state_dir,
                monitoring=self.monitoring,
                environments=environments,
                chaos=self.chaos,
            )
            self._service_environment = environments
        return self._service

    # -- runs --------------------------------------------------------------------------------

    def run(self, progress: ProgressCallback | None = None) -> RunReport:
        """Fire the schedule once, drive the stream until drained, and reconcile the counts
        (`localcloud/stack/run.py`)."""
        return run.run_pipeline(self, progress)

    def redrive(
        self, run_id: str, *, sources: tuple[str, ...] = ("quarantine", "failures")
    ) -> tuple[RedriveReport, RunReport]:
        """Redrive what `run_id` set aside, drain the stream again and reconcile it anew."""
        return run.redrive(self, run_id, sources)

    def fire_reconcile(self) -> dict[str, Any]:
        """Fire the reconcile schedule once; the reconcile function's answer."""
        return run.fire_reconcile(self)

    # -- inspection --------------------------------------------------------------------------

    def stored_items(self, sink_name: str, entity: str) -> list[dict[str, Any]]:
        """Every row of one sink and entity in the API's shape, sorted by key."""
        return inspection.stored_items(self.settings, sink_name, entity)

    def dump(self, directory: Path) -> list[Path]:
        """`DIR/<sink>/<entity>.jsonl` and `DIR/quarantine.jsonl` (`run --dump`)."""
        return inspection.dump(self.settings, directory)
