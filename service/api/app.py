"""The app factory: settings, database, routes, and the one place errors become HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from counterweight.service.api import (
    metrics,
    routes_datasets,
    routes_events,
    routes_health,
    routes_jobs,
    routes_results,
    routes_sweeps,
    routes_webhooks,
    routes_workers,
)
from counterweight.service.api.allow import full_allow
from counterweight.service.api.auth import KeyCache
from counterweight.service.api.deps import require_key_on_v1
from counterweight.service.api.events import EventHub
from counterweight.service.api.janitor import Janitor
from counterweight.service.api.middleware import BodySizeLimit, NoNulInUrl
from counterweight.service.api.openapi import document_security, operation_id
from counterweight.service.api.problems import instance_of, problem
from counterweight.service.api.reads import PollReads
from counterweight.service.api.storage_calls import StorageCalls
from counterweight.service.api.ui.install import install as install_ui
from counterweight.service.errors import (
    ArtifactMissing,
    BadCursor,
    DatabaseUnavailable,
    DatasetError,
    DatasetInUse,
    DatasetNotFound,
    DomainError,
    IdempotencyConflict,
    JobNotFound,
    JobStateConflict,
    LimitExceeded,
    NotAClassifier,
    PredictInputError,
    QueueFull,
    StorageError,
    SweepError,
    SweepNotFound,
    TooManyInputs,
    UploadTooLarge,
    WebhookError,
    WebhookNotFound,
)
from counterweight.service.settings import Settings, get_settings
from counterweight.service.store.availability import unavailable
from counterweight.service.store.engine import (
    dumps_json,
    make_engine,
    make_session_factory,
    upgrade,
)
from counterweight.service.webhooks.dispatcher import Dispatcher

log = logging.getLogger(__name__)

# Every domain error a request can meet, and its status; any other is a bug (500). Each
# answers a problem whose type is named after its class here (service.api.problems).
ERROR_STATUS: dict[type[DomainError], int] = {
    ArtifactMissing: 404,
    JobNotFound: 404,
    JobStateConflict: 409,
    IdempotencyConflict: 409,
    BadCursor: 422,
    DatasetError: 422,
    DatasetNotFound: 404,
    DatasetInUse: 409,
    UploadTooLarge: 413,
    PredictInputError: 422,
    NotAClassifier: 422,  # predict on a sequence labeling job
    TooManyInputs: 413,
    SweepError: 422,
    SweepNotFound: 404,
    LimitExceeded: 422,
    QueueFull: 429,
    WebhookError: 422,
    WebhookNotFound: 404,
    StorageError: 503,
    DatabaseUnavailable: 503,  # read-only, its file gone, the server down (_database_error)
}


class SafeJSONResponse(JSONResponse):
    """JSON that always renders: NaN and infinities become null and non-ASCII text is
    escaped, so that a value no encoder takes (a diverged metric, a lone surrogate echoed
    in an error message) is still an answer, not a 500."""

    def render(self, content: Any) -> bytes:
        return dumps_json(content).encode("ascii")


def _field(loc: tuple[int | str, ...]) -> str:
    # ("body", "train", "epochs") -> "train.epochs": the path a user wrote in the spec.
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field(tuple(e["loc"])), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
    ]
    message = "; ".join(f"{e['field']}: {e['msg']}" for e in errors)
    return problem(
        422, message, instance=instance_of(request), kind=RequestValidationError, errors=errors
    )


def _domain_error(request: Request, exc: Exception) -> Response:
    kind = next((c for c in type(exc).__mro__ if c in ERROR_STATUS), None)
    if kind is None:
        raise exc  # not a client's doing: the server error it is (_server_error)
    return problem(
        ERROR_STATUS[kind],
        str(exc),
        instance=instance_of(request),
        kind=kind,
        retry_after=getattr(exc, "retry_after_seconds", None),
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """What routing, auth and the body cap refuse (404, 405, 401, 413, ...): type
    about:blank. A 405's `Allow` lists every method of the path (service.api.allow)."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = full_allow(request, headers.get("Allow", ""))
    if exc.status_code < 400:  # not an error (a 304): no body
        return Response(status_code=exc.status_code, headers=headers)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return problem(exc.status_code, detail, instance=instance_of(request), headers=headers)


def _server_error(request: Request, exc: Exception) -> Response:
    """A bug: the client gets a problem saying so, and the exception (re-raised by
    Starlette after this answer) goes to the server's log with its traceback."""
    return problem(
        500,
        "internal server error: the server's log has the details",
        instance=instance_of(request),
    )


def _database_error(request: Request, exc: Exception) -> Response:
    """A database that cannot be written or reached is DatabaseUnavailable (503, saying
    why, and logged: the operator must act); any other database error is a bug (500)."""
    refused = unavailable(exc)
    if refused is None:
        raise exc
    log.warning("%s %s: %s", request.method, request.url.path, refused)
    return _domain_error(request, refused)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade(settings.resolved_database_url)  # an empty home is ready on first start
        # One poller of job_events for all of this app's event subscribers.
        app.state.event_hub = hub = EventHub(app.state.sessions)
        hub.start()
        janitor = Janitor(app.state.sessions, settings)
        janitor.start()
        await app.state.poll_reads.open()
        # Deliveries go out on threads of their own, never on the event loop.
        dispatcher = Dispatcher(settings, app.state.sessions) if settings.webhook_dispatch else None
        if dispatcher is not None:
            dispatcher.start()
        # What start-up made (modules, classes, the routes) lives as long as the process:
        # out of the collector's sight, a full collection scans only what requests make.
        # Otherwise, under load, one about every half minute scanned all of start-up's
        # objects and stalled each API process for 0.1-0.2 s (BENCHMARKS.md, "The API
        # process without torch"). Given back at shutdown, for a process that goes on.
        gc.freeze()
        yield
        gc.unfreeze()
        if dispatcher is not None:
            await asyncio.to_thread(dispatcher.stop)
        await hub.stop()
        await janitor.stop()
        await app.state.poll_reads.close()
        engine.dispose()
        app.state.storage_calls.close()

    engine = make_engine(
        settings.resolved_database_url,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        sqlite_synchronous=settings.sqlite_synchronous,
    )
    app = FastAPI(
        title="Counterweight",
        version="1",
        summary="Training as a service for class-imbalanced learning.",
        lifespan=lifespan,
        # /docs is served with Swagger UI's files from the package (service.api.ui.docs).
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
        generate_unique_id_function=operation_id,  # `submit_job`, not `submit_job_v1_jobs_post`
        # Every /v1 route, whichever router brings it, needs an API key (service.api.deps).
        dependencies=[Depends(require_key_on_v1)],
    )
    app.state.settings = settings
    app.state.sessions = make_session_factory(engine)
    app.state.poll_reads = PollReads(engine, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    app.state.storage_calls = StorageCalls(
        settings.storage_max_calls, settings.storage_wait_seconds
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(NoNulInUrl)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    app.include_router(routes_health.router)
    metrics.install(app, app.state.sessions, live_seconds=settings.lease_seconds)
    app.include_router(routes_jobs.router)
    app.include_router(routes_events.router)
    app.include_router(routes_datasets.router)
    app.include_router(routes_results.router)
    app.include_router(routes_sweeps.router)
    app.include_router(routes_workers.router)
    app.include_router(routes_webhooks.router)
    install_ui(app)  # the dashboard under /ui, and /docs
    document_security(app)
    return app


def app_from_env() -> Any:
    """Entry point for `uvicorn --factory service.api.app:app_from_env`."""
    return create_app()
