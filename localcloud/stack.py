"""The embedded local cloud: moto for AWS, a fake MooVitamix API, and the Lambda driver.

`LocalCloud` starts the services, deploys the `local` stage of `.chalice/config.json` into moto
through the deploy code (`localcloud/deployment.py`: infrastructure, functions, schedules,
mappings, alarms, dashboard), reads back what was deployed, gives this process the functions'
deployed environment (plus what the Lambda runtime adds: the endpoint, region, credentials)
and runs the pipeline by calling the Chalice handlers exactly as Lambda would, with the
deployed settings. It holds no pipeline logic: the verdict, the run-outcome metrics and the
DatasetUpdated event come from the reconcile function, which the cloud fires through its
schedule after each run and whose verdict it reads back from the runs table
(`localcloud/run_report.py` builds the run's report; `localcloud/run_progress.py` its live
progress). `LocalMonitoring` turns the handlers' EMF lines into metrics and evaluates the
alarms (see localcloud/monitoring/).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from chalicelib import wiring
from chalicelib.aws import clients as aws
from chalicelib.deadletter.redrive import RedriveReport, new_redrive_id
from chalicelib.load.sinks.postgres_connection import Credentials
from chalicelib.model.contract import ENTITIES, entity_key
from chalicelib.observability.logging import SERVICE
from chalicelib.observability.metrics import metrics
from chalicelib.runs.ledger import run_id_for_event
from chalicelib.settings import Settings, get_settings
from infra import names
from infra.chalice_config import stage_environment
from infra.postgres_secret import ensure_postgres_secret
from infra.provision import Provisioned, StackResult, provisioned_from
from infra.stages import Stage
from infra.trigger import KinesisEventSourceSettings
from localcloud.chaos import Chaos
from localcloud.deployment import (
    STAGE,
    DeployedStage,
    DeploymentError,
    deploy_stage,
    local_project,
    read_deployed,
)
from localcloud.emulators.moto_process import MotoServer
from localcloud.emulators.postgres import EmbeddedPostgres
from localcloud.events import EventCapture
from localcloud.fakeapi import FakeApiServer
from localcloud.monitoring import LocalMonitoring
from localcloud.run_progress import ProgressCallback, ProgressHandler
from localcloud.run_report import (
    RunReport,
    receive_dataset_updated,
    reconcile_run,
    verdict_timings,
    verdict_trigger,
)
from localcloud.triggers.async_invoker import AsyncInvoker
from localcloud.triggers.kinesis import KinesisEventSourceMapping, ShardProgress
from localcloud.triggers.lambda_runtime import LambdaContext, scheduled_event
from localcloud.triggers.lambda_service import LambdaService
from localcloud.triggers.sqs import SqsEventSourceMapping

REGION = "us-east-1"
MOTO_CREDENTIAL = "testing"
"""moto accepts any credentials; these are not a secret."""
RECONCILE_GRACE_S = "0"
"""The local stage's PIPELINE_RECONCILE_GRACE_S: the cloud fires the reconcile schedule only
once its drivers have drained everything, so nothing of the run can still be in flight."""


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
        self._saved_env: dict[str, str | None] = {}
        self.started_s = 0.0
        # PostgreSQL: our own embedded server, or a running one given by the caller (tests)
        self.postgres = postgres
        self._owns_postgres = postgres is None
        self._postgres_started: Future[Credentials] | None = None
        self.postgres_database: str | None = None
        self.events: EventCapture | None = None
        self.monitoring = LocalMonitoring(state_dir)
        self.deployed: DeployedStage | None = None
        self.stage: Stage | None = None
        self.postgres_credentials: Credentials | None = None
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
        cloud._owns_postgres = False
        return cloud

    def processes(self) -> dict[str, Any]:
        """The processes this cloud started: `down` stops what a crashed `up` left behind."""
        found: dict[str, Any] = {}
        if self.moto.pid is not None:
            found["moto"] = self.moto.pid
        if self._owns_postgres and self.postgres is not None and self.postgres.data_dir:
            found["postgres_data_dir"] = str(self.postgres.data_dir)
            pid_file = self.postgres.data_dir / "postmaster.pid"
            if pid_file.exists():
                found["postgres"] = int(pid_file.read_text().split()[0])
        return found

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalCloud:
        if self.attached is not None:
            return self._enter_attached(self.attached)
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._start_postgres()
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
            self._apply_runtime_environment()
            self._deploy(api_url)
            self._prepare_postgres()
            self._apply_deployed_environment()
            if self.chaos is not None and self.postgres and self.postgres_database:
                # postgres-disconnect terminates the sink's sessions through this admin DSN
                self.chaos.postgres_dsn = self.postgres.admin_dsn(self.postgres_database)
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
            self._apply_runtime_environment()
            self.stage = Stage.load(STAGE, Path(state["project"]))
            self.provisioned = provisioned_from(
                self.stage.settings, StackResult([], state["attributes"])
            )
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
            self._restore_environment()
        self._stop_postgres()

    @property
    def settings(self) -> Settings:
        return get_settings()

    def _set_environment(self, environment: dict[str, str], drop: tuple[str, ...] = ()) -> None:
        for name in [*environment, *drop]:
            self._saved_env.setdefault(name, os.environ.get(name))
        for name in drop:
            os.environ.pop(name, None)
        os.environ.update(environment)
        wiring.reset()

    def _apply_runtime_environment(self) -> None:
        """What the Lambda runtime gives every function (and the deploy needs): the emulator's
        endpoint, its region and dummy credentials; no profile or session of this shell."""
        self._set_environment(
            {
                "AWS_ENDPOINT_URL": self.moto.url,
                "AWS_ACCESS_KEY_ID": MOTO_CREDENTIAL,
                "AWS_SECRET_ACCESS_KEY": MOTO_CREDENTIAL,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            },
            drop=("AWS_PROFILE", "AWS_SESSION_TOKEN"),
        )

    def stage_variables(self, api_url: str) -> dict[str, str]:
        """The local stage's variables for this cloud, on top of `.chalice/config.json`."""
        environment = {
            "PIPELINE_API_URL": api_url,
            "PIPELINE_STREAM_SHARDS": str(self.shard_count),
            "PIPELINE_RECONCILE_GRACE_S": RECONCILE_GRACE_S,
        }
        if self._wants_postgres():
            prefix = {**stage_environment(STAGE), **self.extra_env}["PIPELINE_TABLE_PREFIX"]
            environment["PIPELINE_POSTGRES_SECRET_ARN"] = names.postgres_secret(prefix)
        environment.update(self.extra_env)
        return environment

    def _deploy(self, api_url: str) -> None:
        """Deploy the stage into moto with the deploy code and read back what it made."""
        project = local_project(self.state_dir / "project", self.stage_variables(api_url))
        report = deploy_stage(project, self.state_dir / "deploy.log")
        self.stage = Stage.load(STAGE, project)
        self.provisioned = provisioned_from(
            self.stage.settings, StackResult(report.infra, report.attributes)
        )
        self.read_deployment()

    def read_deployment(self) -> DeployedStage:
        """What the drivers emulate, read back from the emulator (after any change to it)."""
        assert self.stage is not None
        self.deployed = read_deployed(self.stage)
        return self.deployed

    @staticmethod
    def _runs_with(environment: dict[str, str]) -> bool:
        """Whether this process has exactly that function environment (no other PIPELINE_)."""
        return all(
            os.environ.get(name) == value for name, value in environment.items()
        ) and not any(
            name.startswith("PIPELINE_") and name not in environment for name in os.environ
        )

    def apply_deployment(self) -> DeployedStage:
        """Read the deployment back; a function reconfigured since (UpdateFunctionConfiguration)
        runs with its new environment from now on. Each run starts with this."""
        deployed = self.read_deployment()
        if not self._runs_with(self._own_environment()):
            self._apply_deployed_environment()
        return deployed

    def _own_environment(self) -> dict[str, str]:
        """This process's function environment: with worker processes (each gets its own
        function's) the reconcile function's, whose verdict and outcome it reads back; as
        threads of this process, the one every function must share."""
        assert self.deployed is not None
        return self.deployed.environment("reconcile" if self.function_processes else None)

    def _apply_deployed_environment(self) -> None:
        """This process runs the functions: it takes their deployed environment."""
        assert self.deployed is not None
        self._set_environment(
            self._own_environment(),
            drop=tuple(name for name in os.environ if name.startswith("PIPELINE_")),
        )

    def _wants_postgres(self) -> bool:
        environment = {**stage_environment("local"), **self.extra_env}
        sinks = environment.get("PIPELINE_SINKS", Settings.model_fields["sinks"].default)
        return "postgres" in [name.strip() for name in str(sinks).split(",")]

    def _start_postgres(self) -> None:
        """Start our embedded PostgreSQL in the background while moto starts."""
        if not (self._owns_postgres and self._wants_postgres()):
            return
        postgres = self.postgres = EmbeddedPostgres()
        database = self.postgres_database = f"moovitamix_{uuid.uuid4().hex[:8]}"
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres")
        self._postgres_started = pool.submit(lambda: postgres.start().create_database(database))
        pool.shutdown(wait=False)  # the thread ends once the database is ready

    def _prepare_postgres(self) -> None:
        """A database and login role for this cloud, its credentials in Secrets Manager."""
        if self._postgres_started is not None:
            credentials = self._postgres_started.result()
        elif self.postgres is not None and self._wants_postgres():
            self.postgres_database = f"moovitamix_{uuid.uuid4().hex[:8]}"
            credentials = self.postgres.create_database(self.postgres_database)
        else:
            return
        # on AWS, RDS keeps the credentials in the stage's secret; here they are this cloud's
        assert self.stage is not None
        self.postgres_credentials = credentials
        ensure_postgres_secret(names.postgres_secret(self.stage.settings.table_prefix), credentials)

    def _stop_postgres(self) -> None:
        if self._postgres_started is not None:
            self._postgres_started.exception()  # wait for a start still running
            self._postgres_started = None
        if self.postgres is None:
            return
        if self._owns_postgres:
            self.postgres.stop()
            self.postgres = None
        elif self.postgres_database is not None:
            self.postgres.drop_database(self.postgres_database)
        self.postgres_database = None

    def _restore_environment(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        wiring.reset()

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

    # -- one run -----------------------------------------------------------------------------

    def mapping_settings(self) -> KinesisEventSourceSettings:
        """The load trigger's settings as deployed (read back from the emulator)."""
        deployed = self.read_deployment()
        if deployed.kinesis is None:
            raise DeploymentError("no enabled event-source mapping from the stream to load")
        return deployed.kinesis.settings

    def _apply_event_source(self) -> None:
        """`event_source` given: change the deployed mapping to it, as an operator would with
        UpdateEventSourceMapping (settings it leaves out keep their deployed value)."""
        if self.event_source is None:
            return
        deployed = self.read_deployment()
        assert deployed.kinesis is not None
        parameters = self.event_source.as_api_parameters()
        parameters.pop("ParallelizationFactor", None)
        aws.client("lambda").update_event_source_mapping(UUID=deployed.kinesis.uuid, **parameters)
        self.event_source = None

    def _context(self, function: str) -> Callable[[int], LambdaContext]:
        """Contexts of the deployed function: its name, memory and timeout."""
        assert self.deployed is not None
        deployed = self.deployed.function(function)
        return lambda _number: LambdaContext(
            deployed.name,
            memory_limit_in_mb=deployed.memory_mb,
            timeout_s=deployed.timeout_s,
            region=REGION,
        )

    def run(self, progress: ProgressCallback | None = None) -> RunReport:
        """Fire the schedule once, drive the stream until drained, and reconcile the counts.

        The run is loaded when the pipeline asks for its verdict
        (`chalicelib.reconcile.verdict_request`): the reconcile function runs then, as Lambda runs
        the async invocation. Once the drivers
        have drained everything, a run it has not settled (no request came, or it came early)
        is settled by firing the reconcile schedule, as on AWS the schedule would.
        """
        import app  # the Chalice app: imported after the environment points at the cloud

        assert self.provisioned is not None
        self._apply_event_source()
        deployed = self.apply_deployment()
        settings = self.settings
        window_start = self.monitoring.begin_run()
        started = time.monotonic()
        progress_handler = ProgressHandler(progress or (lambda *_: None))
        pipeline_logger = logging.getLogger(SERVICE)
        pipeline_logger.addHandler(progress_handler)
        service = self.lambda_service()
        service.on_log = progress_handler.handle
        lambda_events = aws.client("lambda").meta.events
        if not service.processes:  # the handlers' async invocations, made in this process
            lambda_events.register("before-call.lambda.Invoke", service.capture_invoke)
        calls_before = service.aws_calls()
        reconciles_before = len(service.reconciles)
        if deployed.work is None:
            raise DeploymentError("no enabled event-source mapping from the work queue")
        # cold starts on the run's critical path: the ingest and one load per shard now; the
        # reconcile function once the ingest is done (it imports while the load drains); the
        # fan-out workers on their first work item, as Lambda starts them
        service.warm({"ingest": 1, "load": len(self._shard_ids())})

        producer_done = threading.Event()
        ingest_outcome: dict[str, Any] = {}
        event = scheduled_event(deployed.schedule("ingest"), REGION)
        chaos = self.chaos
        ingest_name = deployed.function("ingest").name
        invoker = AsyncInvoker(
            handler=service.handler("ingest", app.ingest),
            lambda_client=aws.client("lambda"),
            function_name=ingest_name,
            region=REGION,
            max_invocations=settings.ingest_max_invocations + 10,
            context_factory=(
                (lambda number: chaos.ingest_context_for(number, ingest_name, REGION))
                if chaos is not None and not service.processes
                else self._context("ingest")
            ),
        )
        service.ingest_queue = invoker.enqueue

        ingest_done = threading.Event()

        def fire_schedule() -> None:
            try:
                last = invoker.run(event)
                if last.error is not None:
                    ingest_outcome["error"] = last.error
                else:
                    ingest_outcome["result"] = last.result
            finally:
                ingest_done.set()
                service.warm({"reconcile": 1})

        if deployed.work.batch_size != 1:
            raise DeploymentError(
                f"the work queue's mapping has batch size {deployed.work.batch_size}: the local "
                "SQS trigger delivers one message per invocation, as app.py deploys it"
            )
        worker = deployed.function(deployed.work.function)
        work = SqsEventSourceMapping(
            sqs=aws.client("sqs"),
            queue_url=deployed.work.queue_url,
            handler=service.handler("ingest_worker", app.ingest_worker),
            function_name=worker.name,
            concurrency=self.workers,
            region=REGION,
            memory_mb=worker.memory_mb,
            timeout_s=worker.timeout_s,
        )

        def run_workers() -> None:
            """Fan-out workers poll until the ingest is done and the work queue is empty."""
            try:
                work.run(ingest_done)
            finally:
                producer_done.set()

        load_handler: Any = app.load
        if chaos is not None and not service.processes:
            wiring.load_dependencies()  # builds the sinks, hence PynamoDB's clients, to hook
            chaos.attach(self._aws_clients())
            load_handler = chaos.wrap_load(load_handler, lambda: chaos.attach(self._aws_clients()))
        # Lambda sees a crash injected by chaos as the function's error, like any other
        mapping = self._mapping(service.handler("load", load_handler))
        producer = threading.Thread(target=fire_schedule, name="ingest", daemon=True)
        producer.start()
        workers = threading.Thread(target=run_workers, name="workers", daemon=True)
        workers.start()
        try:
            shards = mapping.run(producer_done)
            producer.join()
            workers.join()
            self._remember_positions(shards)
        finally:
            if chaos is not None and not service.processes:
                chaos.detach()
            pipeline_logger.removeHandler(progress_handler)
            service.on_log = None
            service.ingest_queue = None
        pipeline_s = time.monotonic() - started

        run_id = run_id_for_event(event)
        service.wait_reconciles()  # a verdict request of the pipeline, still running
        lambda_events.unregister("before-call.lambda.Invoke", service.capture_invoke)
        report = reconcile_run(
            self, run_id, ingest_outcome, shards, work.progress, backstop_only=True
        )
        invocations = service.reconciles[reconciles_before:]
        if report.status == "succeeded":
            receive_dataset_updated(self, report)
        report.metrics, report.alarms = self.monitoring.end_run(window_start)
        report.ingest_invocations = len(invoker.invocations)
        if chaos is not None:
            counts = chaos.counts()
            for name, count in service.chaos_counts().items():
                counts[name] = counts.get(name, 0) + count
            report.chaos = counts
        report.timings = {
            "total_s": round(self.started_s + time.monotonic() - started, 3),
            "pipeline_s": round(pipeline_s, 3),
            **verdict_timings(run_id, invocations, started),
        }
        report.verdict_trigger = verdict_trigger(run_id, invocations)
        if service.processes:
            calls = service.aws_calls()
            report.aws_calls = {
                function: calls[function] - calls_before.get(function, 0)
                for function in ("ingest", "ingest_worker", "load", "reconcile")
            }
        return report

    def lambda_service(self) -> LambdaService:
        """Where the functions run: worker processes (`function_processes`) or this process.

        Each worker process has its function's deployed environment (and what the Lambda
        runtime adds). Made once per cloud (warm across runs); made anew when a function's
        deployed environment changed since."""
        assert self.deployed is not None
        runtime = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        environments = {
            function: {**runtime, **self.deployed.environment(function)}
            for function in ("ingest", "load", "ingest_worker", "reconcile")
        }
        if self._service is not None and self._service_environment != environments:
            self._service.close()
            self._service = None
        if self._service is None:
            deployed = self.deployed
            self._service = LambdaService(
                processes=self.function_processes,
                state_dir=self.state_dir,
                names={
                    function: deployed.function(function).name
                    for function in ("ingest", "load", "ingest_worker", "reconcile")
                },
                contexts={
                    function: functools.partial(self._context(function), 1)
                    for function in ("ingest", "load", "ingest_worker", "reconcile")
                },
                instrument=self.monitoring.instrument,
                emf_output=lambda line: metrics.output(line),
                environments=environments,
                chaos=self.chaos,
            )
            self._service_environment = environments
        return self._service

    def _shard_ids(self) -> list[str]:
        deployed = self.read_deployment()
        if deployed.kinesis is None:
            return []
        stream = deployed.kinesis.stream_arn.rsplit("/", 1)[-1]
        shards = aws.client("kinesis").list_shards(StreamName=stream)["Shards"]
        return [shard["ShardId"] for shard in shards]

    def _mapping(self, handler: Any) -> KinesisEventSourceMapping:
        """The load trigger as deployed, continuing where the previous drain stopped."""
        deployed = self.read_deployment()
        trigger = deployed.kinesis
        if trigger is None:
            raise DeploymentError("no enabled event-source mapping from the stream to load")
        if trigger.settings.parallelization_factor != 1:
            raise DeploymentError(
                f"the Kinesis mapping is deployed with ParallelizationFactor "
                f"{trigger.settings.parallelization_factor}: the local driver runs one batch per "
                "shard at a time (and the DynamoDB sink relies on it)"
            )
        function = deployed.function(trigger.function)
        return KinesisEventSourceMapping(
            kinesis=aws.client("kinesis"),
            stream_name=trigger.stream_arn.rsplit("/", 1)[-1],
            stream_arn=trigger.stream_arn,
            handler=handler,
            function_name=function.name,
            region=REGION,
            settings=trigger.settings,
            sqs=aws.client("sqs"),
            destination_url=trigger.destination_url,
            memory_mb=function.memory_mb,
            timeout_s=function.timeout_s,
            progress={
                shard_id: ShardProgress(shard_id, last_sequence=sequence)
                for shard_id, sequence in self.positions.items()
            },
        )

    def _remember_positions(self, shards: dict[str, ShardProgress]) -> None:
        for shard_id, shard in shards.items():
            if shard.last_sequence:
                self.positions[shard_id] = shard.last_sequence

    def redrive(
        self, run_id: str, *, sources: tuple[str, ...] = ("quarantine", "failures")
    ) -> tuple[RedriveReport, RunReport]:
        """Redrive what `run_id` set aside (the code an operator runs against AWS), drain the
        stream again (without chaos) and reconcile the run anew."""
        import app

        report = RedriveReport(new_redrive_id())
        redriver = wiring.redriver(self.settings)
        if "quarantine" in sources:
            redriver.redrive_quarantine(report, run_id=run_id)
        if "failures" in sources:
            redriver.redrive_failures(report)
        drained = threading.Event()
        drained.set()
        load = self.lambda_service().handler("load", app.load, chaos=False)
        shards = self._mapping(load).run(drained)
        self._remember_positions(shards)
        return report, reconcile_run(self, run_id, {}, shards)

    def _aws_clients(self) -> list[Any]:
        """The pipeline's AWS clients: boto3's cached ones and PynamoDB's (chaos hooks them)."""
        from chalicelib.load.sinks.dynamodb import ROW_MODELS

        clients = [aws.client("kinesis"), aws.client("dynamodb")]
        for model in ROW_MODELS.values():
            clients.append(model._get_connection().connection.client)
        return clients

    def fire_reconcile(self) -> dict[str, Any]:
        """Fire the reconcile schedule once: the deployed function settles the pending runs,
        writes their run-outcome metrics and publishes DatasetUpdated. Returns its answer."""
        deployed = self.read_deployment()
        event = scheduled_event(deployed.schedule("reconcile"), REGION)
        invocation = self.lambda_service().fire_reconcile(event)
        if invocation.error is not None or invocation.answer is None:
            raise RuntimeError(invocation.error or "the reconcile function answered nothing")
        return invocation.answer

    # -- inspection --------------------------------------------------------------------------

    def stored_items(self, sink_name: str, entity: str) -> list[dict[str, Any]]:
        """Every row of one sink and entity in the API's shape, sorted by key."""
        sink = next(s for s in wiring.build_sinks(self.settings) if s.name == sink_name)
        rows: list[dict[str, Any]] = sink.rows(entity)  # type: ignore[attr-defined]
        return sorted(rows, key=lambda item: entity_key(entity, item))

    def dump(self, directory: Path) -> list[Path]:
        """Write `DIR/<sink>/<entity>.jsonl`, one stored row per line, and
        `DIR/quarantine.jsonl`, one quarantined record (payload and reason) per line."""
        written: list[Path] = []
        directory.mkdir(parents=True, exist_ok=True)
        quarantine_path = directory / "quarantine.jsonl"
        with quarantine_path.open("wb") as handle:
            for record in wiring.quarantine(self.settings).records():
                document = orjson.loads(record.to_json())
                handle.write(
                    orjson.dumps(
                        {
                            "run_id": record.run_id,
                            "entity": record.entity,
                            "origin": record.origin,
                            "reason": record.reason,
                            "payload": document["payload"],
                            "payload_base64": document["payload_base64"],
                        },
                        option=orjson.OPT_SORT_KEYS,
                    )
                    + b"\n"
                )
        written.append(quarantine_path)
        for sink in wiring.build_sinks(self.settings):
            folder = directory / sink.name
            folder.mkdir(parents=True, exist_ok=True)
            for entity in ENTITIES:
                path = folder / f"{entity}.jsonl"
                with path.open("wb") as handle:
                    for item in self.stored_items(sink.name, entity):
                        handle.write(orjson.dumps(item) + b"\n")
                written.append(path)
        return written
