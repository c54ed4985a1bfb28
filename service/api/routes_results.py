"""What a succeeded job offers besides its metrics: plots, and predictions from its model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from service import artifacts, inference
from service.api.deps import PrincipalDep, SessionsDep, SettingsDep
from service.api.routes_jobs import ERRORS, succeeded_job

router = APIRouter(prefix="/v1/jobs", tags=["results"])


class PredictRequest(BaseModel):
    inputs: list[Any] = Field(
        description="Each input: nested lists in the model card's `input_shape` (float32; "
        "images in [0, 1]), or for image models a base64 string of PNG or JPEG bytes of "
        "exactly the card's height x width."
    )


class Prediction(BaseModel):
    # `class` is a Python keyword: the field is `class_` in code, `class` on the wire.
    class_: int = Field(alias="class", serialization_alias="class")
    name: str
    probabilities: list[float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


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
    path = artifacts.plot_file(settings, job.id, name, listed)
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
    job = succeeded_job(sessions, principal, job_id, "model")
    loaded = inference.MODELS.get(settings, job.id, settings.predict_cache_models)
    batch = inference.to_batch(body.inputs, loaded, settings.max_predict_inputs)
    return PredictResponse.model_validate({"predictions": inference.predict(loaded, batch)})
