"""One chaos run: its faults, installed around one local cloud, and their counts.

`Chaos` builds the faults a SPEC names, gives the API faults to the fake API's
`FaultInjector`, registers the AWS faults' hooks on the pipeline's clients (`attach`, `detach`),
wraps the load handler in the trigger faults (`wrap_load`), hands the ingest its context
(`ingest_context_for`), and reports how often each fault was injected (`counts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from localcloud.chaos.api_faults import API_FAULTS, ApiFault
from localcloud.chaos.catalogue import FAULTS, parse_spec
from localcloud.chaos.fault import Fault
from localcloud.fakeapi import FaultInjector
from localcloud.triggers.lambda_runtime import Handler, LambdaContext

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
