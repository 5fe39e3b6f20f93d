"""The fake API as an ASGI app: the contract's paths, parameters, envelope and errors.

It serves exactly the contract of `docs/source-api.md` (same paths, query parameters, page
envelope, 422 bodies, `/` -> `/docs`), and nothing upstream lacks; the faults it is given
decide what a request suffers before the page is served.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Final

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel

from chalicelib.model.contract import ENTITIES, ListenHistory, Track, User
from localcloud.fakeapi.data import generate_item, page_body
from localcloud.fakeapi.faults import FaultDecision, FaultInjector
from localcloud.fakeapi.source_faults import SourceFaults


class _UsersPage(BaseModel):
    items: list[User]
    total: int
    page: int
    size: int
    pages: int


class _TracksPage(BaseModel):
    items: list[Track]
    total: int
    page: int
    size: int
    pages: int


class _ListenHistoryPage(BaseModel):
    items: list[ListenHistory]
    total: int
    page: int
    size: int
    pages: int


_PAGE_MODELS: Final[dict[str, type[BaseModel]]] = {
    "users": _UsersPage,
    "tracks": _TracksPage,
    "listen_history": _ListenHistoryPage,
}

PageParam = Annotated[int, Query(ge=1, description="Page number")]
SizeParam = Annotated[int, Query(ge=1, le=100, description="Page size")]


def _fault_response(fault: FaultDecision, faults: FaultInjector) -> Response | None:
    """The error answer of a request-level fault; None when the request must still answer."""
    if fault.name == "api-429":
        return JSONResponse(
            {"detail": "Too Many Requests"},
            status_code=429,
            headers={"Retry-After": str(faults.retry_after)},
        )
    if fault.status_code == 503:
        return JSONResponse({"detail": "Service Unavailable"}, status_code=503)
    if fault.status_code == 500:  # what Starlette answers for an unhandled exception
        return PlainTextResponse("Internal Server Error", status_code=500)
    return None


def build_app(
    records: int = 1000,
    seed: int = 0,
    faults: FaultInjector | None = None,
    source_faults: SourceFaults | None = None,
) -> FastAPI:
    """The MooVitamix API over `records` lazily generated items per resource.

    Items are returned as raw JSON (no response model), so poisoned items reach the client
    as served; the page models only document the contract in `/openapi.json`.
    `source_faults` (`source_faults.py`) make one resource misbehave deterministically.
    """
    if records < 0:
        raise ValueError(f"records must not be negative, got {records}")
    app = FastAPI(title="MooVitamix", version="1.1", description="A music recommendation system")

    @app.get("/")
    async def docs_redirect() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    def add_endpoint(entity: str) -> None:
        async def endpoint(page: PageParam = 1, size: SizeParam = 100) -> Response:
            if faults is not None:
                fault = faults.decide_request()
                if fault is not None:
                    if fault.name == "api-timeout":
                        await asyncio.sleep(faults.timeout_delay)
                    else:
                        answer = _fault_response(fault, faults)
                        if answer is not None:
                            return answer
            if source_faults is not None:
                faulted = source_faults.respond(
                    entity,
                    page,
                    size,
                    records,
                    lambda name, index: generate_item(name, index, records, seed),
                )
                if faulted is not None:
                    return faulted
            body = page_body(entity, page, size, records, seed)
            if faults is not None:
                body["items"] = faults.poison_page(entity, (page - 1) * size, body["items"])
                body["items"] = faults.content_page(entity, (page - 1) * size, body["items"])
            return JSONResponse(body)

        app.add_api_route(
            f"/{entity}",
            endpoint,
            methods=["GET"],
            tags=["HTTP methods"],
            name=f"get_{entity}",
            responses={200: {"model": _PAGE_MODELS[entity]}},
        )

    for entity in ENTITIES:
        add_endpoint(entity)
    return app
