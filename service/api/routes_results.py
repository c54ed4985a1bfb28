"""What a succeeded job offers besides its metrics: plots, and predictions from its model.

Both routes are async: they wait for the artifact store (service.api.storage_calls)
without holding one of the threads that other requests need, and run the rest (the
database read, the model) on those threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from counterweight.service.api import caching
from counterweight.service.api.deps import (
    PrincipalDep,
    SessionsDep,
    SettingsDep,
    StorageCallsDep,
)
from counterweight.service.api.routes_jobs import ERRORS, succeeded_job
from counterweight.service.api.schemas import PredictRequest, PredictResponse
from counterweight.service.storage.jobs import checked_plot_name
from counterweight.service.store.engine import dumps_json

if TYPE_CHECKING:
    from counterweight.service.api.predict import LoadedModel, ModelCache

router = APIRouter(prefix="/v1/jobs", tags=["results"])


@router.get(
    "/{job_id}/plots/{name}.png",
    responses={**ERRORS, **caching.responses({"image/png": {}})},
    response_class=FileResponse,
)
async def get_job_plot(
    job_id: str,
    name: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
    if_none_match: caching.IfNoneMatch = None,
) -> Response:
    """A plot rendered when the job ended; the job's metrics list the names (`plots`).
    Immutable, as the model (service.api.caching)."""
    job = await run_in_threadpool(succeeded_job, sessions, principal, job_id, "plots")
    listed = list((job.result or {}).get("plots") or [])
    file_name = checked_plot_name(job.id, name, listed)
    tag = caching.etag(job, file_name)
    if (unchanged := caching.not_modified(if_none_match, tag)) is not None:
        return unchanged
    path = await storage.job_file(settings, job.id, file_name)
    return FileResponse(path, media_type="image/png", headers=caching.headers(tag))


@router.post(
    "/{job_id}/predict",
    responses={
        **ERRORS,
        413: {"description": "More inputs than COUNTERWEIGHT_MAX_PREDICT_INPUTS"},
    },
    response_model=PredictResponse,
    response_model_by_alias=True,
)
async def predict(
    job_id: str,
    body: PredictRequest,
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
) -> Response:
    """The class, its name and all class probabilities for each input, from the job's
    selected checkpoint. The model is loaded once and kept for the next requests."""
    job = await run_in_threadpool(succeeded_job, sessions, principal, job_id, "model")
    models = await _model_cache(request, settings.predict_cache_models)
    loaded = await models.get(settings, job.id, storage)
    answer = await run_in_threadpool(_predictions, loaded, body, settings.max_predict_inputs)
    return Response(answer, media_type="application/json")


async def _model_cache(request: Request, capacity: int) -> ModelCache:
    """This process's loaded models, made by its first predict."""
    cache: ModelCache | None = getattr(request.app.state, "model_cache", None)
    if cache is None:
        made = await run_in_threadpool(_new_model_cache, capacity)
        # Two first predicts may both have made one: the first stored stays.
        cache = getattr(request.app.state, "model_cache", None) or made
        request.app.state.model_cache = cache
    return cache


def _new_model_cache(capacity: int) -> ModelCache:
    # Imported here, on a thread, not at the top: it loads torch (seconds), which no
    # other route needs.
    from counterweight.service.api.predict import ModelCache

    return ModelCache(capacity)


def _predictions(loaded: LoadedModel, body: PredictRequest, max_inputs: int) -> bytes:
    # Imported already (_new_model_cache); named apart from the route, `predict`.
    from counterweight.service.api import predict as inference

    batch = inference.to_batch(body.inputs, loaded, max_inputs)
    predictions = inference.predict(loaded, batch, body.priors)
    answer = PredictResponse.model_validate({"predictions": predictions})
    return dumps_json(answer.model_dump(mode="json", by_alias=True)).encode("ascii")
