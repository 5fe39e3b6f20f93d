"""Faults of the trigger: what befalls a function around its handler, not inside it.

The load function crashes after writing part of its batch, a batch is delivered twice, the
ingest is cut off mid-run (its context runs out of time, or its process "dies" at a PutRecords
call or a checkpoint) before Lambda re-invokes it, or the pipeline's PostgreSQL sessions are
terminated server-side before a load.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from localcloud.chaos.fault import Fault, SimulatedCrash
from localcloud.triggers.lambda_runtime import Handler, LambdaContext

if TYPE_CHECKING:
    from localcloud.chaos.run import Chaos

log = logging.getLogger(__name__)


class PostgresDisconnect(Fault):
    """Terminates the pipeline's PostgreSQL sessions, server-side, before a load invocation.

    The sink's connection breaks as it would when RDS fails over or restarts: the next
    statement raises `psycopg.OperationalError`. Needs an admin DSN of the database
    (`Chaos.postgres_dsn`); without one (no PostgreSQL sink configured) it is never injected.
    """

    name = "postgres-disconnect"
    default_probability = 0.05
    description = "the PostgreSQL server drops the sink's connections"

    def install(self, chaos: Chaos) -> None:
        # the DSN is read at each invocation: the local cloud sets it once PostgreSQL is up
        chaos.before_load.append(lambda: self.maybe_disconnect(chaos.postgres_dsn))

    def maybe_disconnect(self, dsn: str | None) -> int:
        if not dsn or not self.decide():
            return 0
        return terminate_postgres_sessions(dsn)


def terminate_postgres_sessions(dsn: str) -> int:
    """`pg_terminate_backend` every other client session of the DSN's database."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        ).fetchall()
    terminated = sum(1 for (ok,) in rows if ok)
    log.info("chaos: terminated %d PostgreSQL sessions", terminated)
    return terminated


class ConsumerCrash(Fault):
    name = "consumer-crash"
    default_probability = 0.05
    description = "the load function dies after writing part of its batch"

    def install(self, chaos: Chaos) -> None:
        chaos.load_wrappers.append(self.wrap)

    def wrap(self, handler: Handler) -> Handler:
        def crashing(event: dict[str, Any], context: Any) -> Any:
            records = event["Records"]
            if not self.decide():
                return handler(event, context)
            part = records[: max(1, len(records) // 2)] if len(records) > 1 else []
            if part:
                handler({**event, "Records": part}, context)  # written, then the process dies
            raise SimulatedCrash(
                f"load function crashed after writing {len(part)} of {len(records)} records"
            )

        return crashing


class DuplicateDelivery(Fault):
    name = "duplicate-delivery"
    default_probability = 0.05
    description = "the trigger delivers a batch twice"

    def install(self, chaos: Chaos) -> None:
        chaos.load_wrappers.append(self.wrap)

    def wrap(self, handler: Handler) -> Handler:
        def duplicating(event: dict[str, Any], context: Any) -> Any:
            response = handler(event, context)
            if self.decide():
                return handler(event, context)
            return response

        return duplicating


class ShortLivedContext(LambdaContext):
    """A context that reports the time as run out after `checks` questions."""

    def __init__(self, function_name: str, region: str, checks: int, fault: Fault) -> None:
        super().__init__(function_name, region=region)
        self.checks_left = checks
        self.fault = fault
        self.expired = False

    def get_remaining_time_in_millis(self) -> int:
        if self.checks_left <= 0:
            if not self.expired:
                self.expired = True
                self.fault.count()
            return 0
        self.checks_left -= 1
        return super().get_remaining_time_in_millis()


class ProducerTimeout(Fault):
    """Cuts the ingest off, then Lambda re-invokes it with the same event.

    Two ways, drawn per injection: its context runs out of time after a few pages (the ingest
    stops cleanly and continues in a new invocation), or its process dies at a PutRecords call
    or at a checkpoint write (Lambda's async retry re-invokes it). At most `max_per_run`
    cut-offs per run, and never in the retry of a crashed invocation (Lambda retries an async
    invocation twice only), so that the run can finish.
    """

    name = "producer-timeout"
    default_probability = 0.5
    description = "the ingest function is cut off mid-run and re-invoked"
    max_per_run: ClassVar[int] = 4

    _armed: str | None = None
    _countdown: int = 0
    _planned: int = 0
    _context: ShortLivedContext | None = None
    _crashed: bool = False

    def install(self, chaos: Chaos) -> None:
        chaos.hook("kinesis", "before-call.kinesis.PutRecords", self._maybe_die_at_put)
        chaos.hook("dynamodb", "before-call.dynamodb.UpdateItem", self._maybe_die_at_checkpoint)
        chaos.ingest_context = self.context_for

    def context_for(self, number: int, function_name: str, region: str) -> LambdaContext:
        with self._lock:
            unfired = self._armed is not None or (
                self._context is not None and not self._context.expired
            )
            if unfired:  # the last cut-off never happened: it does not count against the limit
                self._planned -= 1
            # never two crashes in a row: Lambda retries a crashed async invocation only twice
            after_crash, self._crashed = self._crashed, False
            self._armed, self._context = None, None
            eligible = self.probability > 0 and self._planned < self.max_per_run and not after_crash
            inject = eligible and (self._planned == 0 or self._rng.random() < self.probability)
            if inject:
                self._planned += 1
            mode = self._rng.choice(("deadline", "put", "checkpoint"))
            countdown = self._rng.randint(0, 2)
        if not inject:
            return LambdaContext(function_name, region=region)
        if mode == "deadline":
            self._context = ShortLivedContext(function_name, region, countdown + 1, self)
            return self._context
        self._armed, self._countdown = mode, countdown
        return LambdaContext(function_name, region=region)

    def _fire(self, mode: str) -> None:
        if self._armed != mode:
            return
        if self._countdown > 0:
            self._countdown -= 1
            return
        self._armed = None
        self._crashed = True
        self.count()
        raise SimulatedCrash(f"ingest function timed out (chaos: died at {mode})")

    def _maybe_die_at_put(self, **_: Any) -> None:
        self._fire("put")

    def _maybe_die_at_checkpoint(self, params: dict[str, Any], **_: Any) -> None:
        body = params.get("body") or b""
        if isinstance(body, bytes | bytearray) and b'"#cp"' in body:
            self._fire("checkpoint")
