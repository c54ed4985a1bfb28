"""Caps on what one request may ask of the service (settings: COUNTERWEIGHT_MAX_*).

Each refusal names the field, the value sent and the cap, and the setting that
raises it: request bodies (413, checked before the app reads them), epochs, batch
size, inline weight arrays and model size (422, at submit time), and the jobs a
tenant may have queued (429).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db.models import Job, JobStatus
from service.spec import JobSpec

# Routes that stream their body and enforce their own cap (POST /v1/datasets:
# COUNTERWEIGHT_MAX_UPLOAD_BYTES), as (method, path).
STREAMED_ROUTES = frozenset({("POST", "/v1/datasets")})


class LimitExceeded(ValueError):
    """A job asks for more than a configured cap allows (HTTP 422)."""


class QueueFull(Exception):
    """The tenant has as many jobs queued as it may (HTTP 429)."""


def _over(field: str, value: int, cap: int, setting: str, unit: str = "") -> LimitExceeded:
    return LimitExceeded(
        f"{field}: {value}{unit} is more than this service allows ({cap}{unit}, "
        f"COUNTERWEIGHT_{setting})"
    )


def check_spec(
    spec: JobSpec, *, max_epochs: int, max_batch_size: int, max_inline_weights: int
) -> None:
    """The caps a spec can be checked against without its data."""
    if spec.train.epochs > max_epochs:
        raise _over("train.epochs", spec.train.epochs, max_epochs, "MAX_EPOCHS")
    if spec.train.batch_size > max_batch_size:
        raise _over("train.batch_size", spec.train.batch_size, max_batch_size, "MAX_BATCH_SIZE")
    if isinstance(spec.sample_weight, list) and len(spec.sample_weight) > max_inline_weights:
        raise LimitExceeded(
            f"sample_weight: {len(spec.sample_weight)} inline weights is more than this "
            f"service allows ({max_inline_weights}, COUNTERWEIGHT_MAX_INLINE_WEIGHTS); put "
            'them in the uploaded dataset as its sample_weight array and send "from_dataset"'
        )


@functools.lru_cache(maxsize=256)
def count_parameters(
    arch: str, kwargs: tuple[tuple[str, int], ...], input_shape: tuple[int, ...], k: int
) -> int:
    """Trainable parameters of the model a job would build, built on torch's meta device:
    shapes only, no memory and no initialisation cost."""
    import torch  # the API imports torch anyway (predict); workers need no such count

    from workers.training.models import build_model

    with torch.device("meta"):
        model = build_model(arch, input_shape, k, **dict(kwargs))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_model(spec: JobSpec, input_shape: Sequence[int], num_classes: int, cap: int) -> None:
    from workers.training.models import arch_kwargs

    kwargs = tuple(sorted(arch_kwargs(spec.model).items()))
    count = count_parameters(spec.model.arch, kwargs, tuple(input_shape), num_classes)
    if count > cap:
        raise LimitExceeded(
            f"model: {spec.model.arch} with {dict(kwargs) or 'its fixed layers'} on inputs of "
            f"shape {tuple(input_shape)} has {count:,} parameters, more than this service "
            f"allows ({cap:,}, COUNTERWEIGHT_MAX_MODEL_PARAMETERS)"
        )


def check_queue(session: Session, tenant: str, cap: int, adding: int = 1) -> None:
    """Refuse `adding` more jobs if the tenant's queued jobs would exceed `cap`. Checked
    in the submitting transaction; two submissions racing may each pass (a soft cap)."""
    queued = session.scalar(
        select(func.count()).where(Job.tenant == tenant, Job.status == JobStatus.queued)
    )
    queued = queued or 0
    if queued + adding > cap:
        asked = "a job" if adding == 1 else f"{adding} jobs"
        raise QueueFull(
            f"too many queued jobs: tenant {tenant!r} has {queued} queued and asked for "
            f"{asked}; at most {cap} may be queued at once "
            "(COUNTERWEIGHT_MAX_QUEUED_JOBS_PER_TENANT). Wait for some to start, or cancel some"
        )


def _too_large(cap: int) -> HTTPException:
    return HTTPException(
        413, f"request body: larger than {cap} bytes (COUNTERWEIGHT_MAX_REQUEST_BYTES)"
    )


class BodySizeLimit:
    """ASGI middleware: a body over `max_bytes` is a 413. A declared Content-Length is
    refused before a byte is read; a chunked body is counted as the app reads it, and
    the HTTPException raised mid-read reaches the app's handlers as any other."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in STREAMED_ROUTES:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            detail = _too_large(self.max_bytes).detail
            await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)
