"""What a succeeded job offers besides its metrics: plots, and predictions from its model."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from counterweight.service.api.deps import PrincipalDep, SessionsDep, SettingsDep
from counterweight.service.api.routes_jobs import ERRORS, succeeded_job
from counterweight.service.api.schemas import PredictRequest, PredictResponse
from counterweight.service.storage.jobs import plot_file

router = APIRouter(prefix="/v1/jobs", tags=["results"])


@router.get(
    "/{job_id}/plots/{name}.png",
    responses={**ERRORS, 200: {"content": {"image/png": {}}}},
    response_class=FileResponse,
)
def job_plot(
    job_id: str, name: str, sessions: SessionsDep, settings: SettingsDep, principal: PrincipalDep
) -> FileResponse:
    """A plot rendered when the job ended; the job's metrics list the names (`plots`)."""
    job = succeeded_job(sessions, principal, job_id, "plots")
    listed = list((job.result or {}).get("plots") or [])
    path = plot_file(settings, job.id, name, listed)
    return FileResponse(path, media_type="image/png")


@router.post(
    "/{job_id}/predict",
    responses={
        **ERRORS,
        413: {"description": "More inputs than COUNTERWEIGHT_MAX_PREDICT_INPUTS"},
    },
    response_model_by_alias=True,
)
def job_predict(
    job_id: str,
    body: PredictRequest,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> PredictResponse:
    """The class, its name and all class probabilities for each input, from the job's
    selected checkpoint. The model is loaded once and kept for the next requests."""
    # Imported here, not at the top: it loads torch, which no other route needs.
    from counterweight.service.api import predict

    job = succeeded_job(sessions, principal, job_id, "model")
    loaded = predict.MODELS.get(settings, job.id, settings.predict_cache_models)
    batch = predict.to_batch(body.inputs, loaded, settings.max_predict_inputs)
    return PredictResponse.model_validate({"predictions": predict.predict(loaded, batch)})
