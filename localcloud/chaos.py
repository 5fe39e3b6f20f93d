"""Chaos for the local cloud: faults injected around the pipeline, never inside it.

`python -m localcloud run --chaos SPEC [--seed S]`, where SPEC is `all` or a comma list of
`NAME` or `NAME=probability`. Each fault is a small object in `FAULTS`, injected at one of
three layers:

- the fake API (`api-5xx`, `api-429`, `api-timeout`, `poison`): the built-in API's own
  `FaultInjector` misbehaves; absent with `--api-url`;
- the AWS clients (`kinesis-partial`, `kinesis-throttle`, `dynamodb-throttle`): botocore event
  hooks on the pipeline's cached boto3 clients (`chalicelib.aws.clients.client`) and on PynamoDB's
  clients answer with throttling errors (which botocore's standard retry mode retries), fail
  part of a PutRecords call, or leave part of a BatchWriteItem in `UnprocessedItems`, exactly
  as the services do;
- the trigger (`consumer-crash`, `duplicate-delivery`, `producer-timeout`,
  `postgres-disconnect`): the driver's call of a handler crashes the load function after it
  wrote part of its batch, delivers a batch twice, cuts the ingest off mid-run (its context
  runs out of time, or its process "dies" at a PutRecords call or a checkpoint) before
  re-invoking it, or terminates the pipeline's PostgreSQL sessions server-side.

Every fault that is named fires at its first opportunity, then with its probability (default
per fault, or `NAME=p`), drawn from a generator seeded with `--seed` and the fault's name, so a
chaos run always exercises what it names. `times_injected` per fault goes into the JSON
summary. Without `poison`, a chaos run must leave the stores exactly as a clean run does.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import orjson
from botocore.awsrequest import AWSResponse, HTTPHeaders

from localcloud.fakeapi import FaultInjector
from localcloud.fakeapi.content_faults import CONTENT_FAULTS
from localcloud.triggers.lambda_runtime import Handler, LambdaContext

log = logging.getLogger(__name__)

API_FAULTS: Final = ("api-5xx", "api-429", "api-timeout", "poison", *CONTENT_FAULTS)


class ChaosSpecError(ValueError):
    """The --chaos SPEC names an unknown fault or a probability outside 0..1."""


class SimulatedCrash(Exception):
    """A handler "died" (chaos): the driver treats it as Lambda treats a crashed invocation."""


# -- fault objects ----------------------------------------------------------------------------


@dataclass
class Fault:
    """One kind of misbehaviour: when to inject it and how often it was injected."""

    name: ClassVar[str] = ""
    default_probability: ClassVar[float] = 0.1
    description: ClassVar[str] = ""
    in_all: ClassVar[bool] = True
    """Part of `--chaos all`. Content faults are not: they change what the source holds, so
    the stores cannot end as in a clean run."""

    probability: float
    seed: int = 0
    injected: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.seed}:{self.name}")  # noqa: S311 - chaos, not crypto

    def decide(self) -> bool:
        """Whether to inject now: always at the first opportunity, then with `probability`."""
        with self._lock:
            if self.probability <= 0:
                return False
            if self.injected == 0 or self._rng.random() < self.probability:
                self.injected += 1
                return True
            return False

    def draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def count(self) -> None:
        with self._lock:
            self.injected += 1

    def install(self, chaos: Chaos) -> None:
        """Register hooks (AWS faults) or wrappers (trigger faults)."""


@dataclass
class ApiFault(Fault):
    """Injected by the built-in fake API's FaultInjector; counted there."""


class Api5xx(ApiFault):
    name = "api-5xx"
    default_probability = 0.05
    description = "the API answers 500 or 503"


class Api429(ApiFault):
    name = "api-429"
    default_probability = 0.02
    description = "the API answers 429 with Retry-After"


class ApiTimeout(ApiFault):
    name = "api-timeout"
    default_probability = 0.02
    description = "the API stalls past the client's read timeout"


class Poison(ApiFault):
    name = "poison"
    default_probability = 0.01
    description = "the API serves records that break the contract"


def _content_fault(fault_name: str, text: str) -> type[ApiFault]:
    """An ApiFault class for one content fault of `localcloud/fakeapi/content_faults.py`."""
    return type(
        f"Content{fault_name.title().replace('-', '')}",
        (ApiFault,),
        {"name": fault_name, "default_probability": 0.05, "description": text, "in_all": False},
    )


CONTENT_FAULT_CLASSES: Final[tuple[type[ApiFault], ...]] = tuple(
    _content_fault(name, text) for name, text in CONTENT_FAULTS.items()
)


def _error_response(status: int, code: str, message: str, json_version: str) -> AWSResponse:
    """An HTTP error answer in the AWS JSON protocol, which botocore parses and retries."""
    body = orjson.dumps({"__type": code, "message": message})
    headers = HTTPHeaders()
    headers["Content-Type"] = f"application/x-amz-json-{json_version}"
    headers["x-amzn-ErrorType"] = code
    return AWSResponse("https://chaos.invalid/", status, headers, _Body(body))


@dataclass
class _Body:
    data: bytes

    def stream(self, **_: Any) -> Iterable[bytes]:
        yield self.data


class KinesisThrottle(Fault):
    name = "kinesis-throttle"
    default_probability = 0.1
    description = "PutRecords answers ProvisionedThroughputExceededException"

    def install(self, chaos: Chaos) -> None:
        chaos.hook("kinesis", "before-send.kinesis.PutRecords", self._before_send)

    def _before_send(self, **_: Any) -> AWSResponse | None:
        if not self.decide():
            return None
        return _error_response(
            400,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for shard in stream (chaos)",
            "1.1",
        )


class KinesisPartial(Fault):
    name = "kinesis-partial"
    default_probability = 0.2
    description = "PutRecords accepts only part of the records (FailedRecordCount > 0)"

    def install(self, chaos: Chaos) -> None:
        chaos.hook("kinesis", "before-parameter-build.kinesis.PutRecords", self._drop_some)
        chaos.hook("kinesis", "after-call.kinesis.PutRecords", self._report_failed)

    def _drop_some(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        records = params.get("Records") or []
        if len(records) < 2 or not self.decide():
            return
        rng = random.Random(self.draw())  # noqa: S311 - chaos
        count = max(1, int(len(records) * rng.uniform(0.05, 0.5)))
        failed = sorted(rng.sample(range(len(records)), min(count, len(records) - 1)))
        context["chaos_failed_records"] = failed
        dropped = set(failed)
        params["Records"] = [r for i, r in enumerate(records) if i not in dropped]

    def _report_failed(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        failed = context.pop("chaos_failed_records", None)
        if not failed or "Records" not in parsed:
            return
        accepted = iter(parsed["Records"])
        results: list[dict[str, Any]] = []
        dropped = set(failed)
        for index in range(len(parsed["Records"]) + len(failed)):
            if index in dropped:
                results.append(
                    {
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded for shard (chaos)",
                    }
                )
            else:
                results.append(next(accepted))
        parsed["Records"] = results
        parsed["FailedRecordCount"] = int(parsed.get("FailedRecordCount", 0)) + len(failed)


class DynamoDBThrottle(Fault):
    name = "dynamodb-throttle"
    default_probability = 0.05
    description = "DynamoDB throttles a call, or leaves part of a BatchWriteItem unprocessed"

    def install(self, chaos: Chaos) -> None:
        chaos.hook("dynamodb", "before-send.dynamodb", self._before_send)
        chaos.hook("dynamodb", "before-parameter-build.dynamodb.BatchWriteItem", self._defer)
        chaos.hook("dynamodb", "after-call.dynamodb.BatchWriteItem", self._report_unprocessed)

    def _before_send(self, **_: Any) -> AWSResponse | None:
        if not self.decide():
            return None
        return _error_response(
            400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded (chaos)",
            "1.0",
        )

    def _defer(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        requests = params.get("RequestItems") or {}
        total = sum(len(items) for items in requests.values())
        if total < 2 or not self.decide():
            return
        rng = random.Random(self.draw())  # noqa: S311 - chaos
        budget = max(1, min(total - 1, int(total * rng.uniform(0.1, 0.5))))
        deferred: dict[str, list[Any]] = {}
        for table in list(requests):
            items = requests[table]
            take = min(budget, len(items) if len(requests) > 1 else len(items) - 1)
            if take <= 0:
                continue
            deferred[table], requests[table] = items[-take:], items[:-take]
            if not requests[table]:
                del requests[table]
            budget -= take
            if budget <= 0:
                break
        context["chaos_unprocessed"] = deferred

    def _report_unprocessed(
        self, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        deferred = context.pop("chaos_unprocessed", None)
        if not deferred or "Error" in parsed:
            return
        unprocessed = parsed.setdefault("UnprocessedItems", {})
        for table, items in deferred.items():
            unprocessed.setdefault(table, []).extend(items)


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


FAULTS: Final[dict[str, type[Fault]]] = {
    fault.name: fault
    for fault in (
        Api5xx,
        Api429,
        ApiTimeout,
        KinesisPartial,
        KinesisThrottle,
        DynamoDBThrottle,
        PostgresDisconnect,
        ConsumerCrash,
        DuplicateDelivery,
        ProducerTimeout,
        Poison,
    )
}
"""Every fault, by its --chaos name."""
FAULTS.update({fault.name: fault for fault in CONTENT_FAULT_CLASSES})


def parse_spec(spec: str) -> dict[str, float]:
    """`all` or `NAME[,NAME=p...]` -> {name: probability}; raises ChaosSpecError."""
    probabilities: dict[str, float] = {}
    for part in (piece.strip() for piece in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        names = [n for n, f in FAULTS.items() if f.in_all] if name == "all" else [name]
        for each in names:
            if each not in FAULTS:
                raise ChaosSpecError(
                    f"unknown fault {each!r} in --chaos; known: all, {', '.join(FAULTS)}"
                )
            if sep:
                try:
                    probability = float(value)
                except ValueError as error:
                    raise ChaosSpecError(f"{part!r}: the probability is not a number") from error
            else:
                probability = FAULTS[each].default_probability
            if not 0.0 <= probability <= 1.0:
                raise ChaosSpecError(f"{part!r}: the probability must be within 0..1")
            probabilities[each] = probability
    if not probabilities:
        raise ChaosSpecError("--chaos needs `all` or at least one fault name")
    return probabilities


IngestContextFactory = Callable[[int, str, str], LambdaContext]


class Chaos:
    """The faults of one chaos run, installed around one local cloud."""

    def __init__(
        self,
        probabilities: dict[str, float],
        *,
        seed: int = 0,
        fake_api: bool = True,
        postgres_dsn: str | None = None,
    ) -> None:
        self.seed = seed
        self.fake_api = fake_api
        self.postgres_dsn = postgres_dsn
        self.faults: dict[str, Fault] = {
            name: FAULTS[name](probability=probability, seed=seed)
            for name, probability in probabilities.items()
        }
        self.load_wrappers: list[Callable[[Handler], Handler]] = []
        self.before_load: list[Callable[[], object]] = []
        self.ingest_context: IngestContextFactory | None = None
        self._hooks: list[tuple[str, str, Callable[..., Any]]] = []
        self._hooked_clients: dict[int, Any] = {}
        self.api_injector: FaultInjector | None = None
        api = {name: p for name, p in probabilities.items() if name in API_FAULTS}
        if api and fake_api:
            self.api_injector = FaultInjector(
                api, seed=seed, retry_after=1, timeout_delay=self.api_timeout_delay_s
            )
        for fault in self.faults.values():
            if not isinstance(fault, ApiFault):
                fault.install(self)

    api_timeout_delay_s: ClassVar[float] = 2.5
    client_read_timeout_s: ClassVar[float] = 2.0
    """The API read timeout a chaos run gives the ingest, shorter than the stall above."""

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> Chaos:
        return cls(parse_spec(spec), **options)

    @property
    def names(self) -> list[str]:
        return list(self.faults)

    def environment(self) -> dict[str, str]:
        """Settings a chaos run changes: an API timeout shorter than the injected stall."""
        if "api-timeout" in self.faults and self.fake_api:
            return {"PIPELINE_REQUEST_TIMEOUT_S": str(self.client_read_timeout_s)}
        return {}

    # -- AWS client hooks --------------------------------------------------------------------

    def hook(self, service: str, event: str, handler: Callable[..., Any]) -> None:
        self._hooks.append((service, event, handler))

    def attach(self, clients: Sequence[Any]) -> None:
        """Register the hooks on every client not hooked yet (idempotent; call it again when
        new clients appear, e.g. PynamoDB's after a reset)."""
        for client in clients:
            if id(client) in self._hooked_clients:
                continue
            service = client.meta.service_model.service_name
            for hook_service, event, handler in self._hooks:
                if hook_service == service:
                    client.meta.events.register_first(event, handler)
            self._hooked_clients[id(client)] = client

    def detach(self) -> None:
        for client in self._hooked_clients.values():
            service = client.meta.service_model.service_name
            for hook_service, event, handler in self._hooks:
                if hook_service == service:
                    client.meta.events.unregister(event, handler)
        self._hooked_clients.clear()

    # -- trigger layer -----------------------------------------------------------------------

    def wrap_load(self, handler: Handler, before: Callable[[], None] | None = None) -> Handler:
        """The load handler as the chaotic trigger calls it."""
        wrapped = handler
        for wrapper in self.load_wrappers:
            wrapped = wrapper(wrapped)
        inner = wrapped

        def load(event: dict[str, Any], context: Any) -> Any:
            if before is not None:
                before()
            for step in self.before_load:
                step()
            return inner(event, context)

        return load

    def ingest_context_for(self, number: int, function_name: str, region: str) -> LambdaContext:
        if self.ingest_context is None:
            return LambdaContext(function_name, region=region)
        return self.ingest_context(number, function_name, region)

    # -- report ------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """{fault name: times injected}, in the order of the spec."""
        counts = {}
        for name, fault in self.faults.items():
            if isinstance(fault, ApiFault):
                counts[name] = self.api_injector.injected.get(name, 0) if self.api_injector else 0
            else:
                counts[name] = fault.injected
        return counts
