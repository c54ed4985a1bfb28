"""The dashboard's pages: thin routes that read through the JSON API's own functions
(routes_jobs, routes_sweeps, the store's listing) and hand the answers to a template."""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any, cast, get_args
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from counterweight.service.api import routes_datasets, routes_jobs, routes_sweeps
from counterweight.service.api.auth import Principal
from counterweight.service.api.deps import SessionsDep, SettingsDep, StorageCallsDep, authenticate
from counterweight.service.api.schemas import JobOut
from counterweight.service.api.ui import views
from counterweight.service.api.ui.session import (
    COOKIE,
    UI_PREFIX,
    DataPrincipal,
    PagePrincipal,
    SameOrigin,
    set_key_cookie,
)
from counterweight.service.errors import DomainError, JobStateConflict
from counterweight.service.spec import JobSpec, LossType, Sampler
from counterweight.service.store.engine import read_only
from counterweight.service.store.models import JobStatus
from counterweight.service.store.queue.inspect import final_scores, get_job

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")  # autoescapes
# JSON as text, escaped as any string (Jinja's own tojson is for script contexts: it
# would show "<" as "\u003c").
templates.env.filters["json_text"] = json.dumps
PAGE_SIZE = 25
MAX_COMPARE = 8


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse(f"{UI_PREFIX}/jobs", status_code=303)


def _safe_next(target: str) -> str:
    # Only a path of the dashboard itself: never another site (//evil, http://...).
    ok = target.startswith(UI_PREFIX + "/") and not target.startswith("//") and "\\" not in target
    return target if ok else f"{UI_PREFIX}/jobs"


@router.get("/login")
def login_page(request: Request, next: str = f"{UI_PREFIX}/jobs") -> HTMLResponse:
    return _render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login", dependencies=[SameOrigin])
async def login(
    request: Request, key: Annotated[str, Form()], next: Annotated[str, Form()] = ""
) -> Response:
    try:
        await authenticate(request, key.strip() or None)
    except HTTPException as refused:
        return _render(request, "login.html", 401, next=_safe_next(next), error=refused.detail)
    response = RedirectResponse(_safe_next(next), status_code=303)
    set_key_cookie(response, request, key.strip())
    return response


@router.post("/logout", dependencies=[SameOrigin])
def logout() -> Response:
    response = RedirectResponse(f"{UI_PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=UI_PREFIX)
    return response


def _job_rows(
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: Principal,
    filters: dict[str, str | None],
) -> tuple[list[dict[str, Any]], str | None]:
    status = JobStatus(filters["status"]) if filters["status"] else None
    loss = filters["loss"] or None
    if loss is not None and loss not in get_args(LossType):
        return [], None  # no job has a loss of that name
    page = routes_jobs.list_jobs(
        sessions,
        settings,
        principal,
        status=status,
        dataset=filters["dataset"] or None,
        loss_type=cast(LossType, loss),
        limit=PAGE_SIZE,
        cursor=filters["cursor"] or None,
    )
    with read_only(sessions) as session:
        scores = final_scores(session, [job.id for job in page.data])
    return [views.job_row(job, scores.get(job.id)) for job in page.data], page.next_cursor


Filter = Annotated[str | None, Query(max_length=200)]


def job_filters(
    status: Filter = None, dataset: Filter = None, loss: Filter = None, cursor: Filter = None
) -> dict[str, str | None]:
    """The jobs page's query: its filters and the cursor of the page shown."""
    if status and status not in {s.value for s in JobStatus}:
        raise HTTPException(422, f"status: expected one of {', '.join(s.value for s in JobStatus)}")
    return {"status": status, "dataset": dataset, "loss": loss, "cursor": cursor}


JobFilters = Annotated[dict[str, str | None], Depends(job_filters)]


@router.get("/jobs")
def jobs_page(
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PagePrincipal,
    filters: JobFilters,
) -> HTMLResponse:
    rows, next_cursor = _job_rows(sessions, settings, principal, filters)
    return _render(
        request,
        "jobs.html",
        rows=rows,
        next_cursor=next_cursor,
        filters=filters,
        # The filters without the cursor, for the paging links.
        filter_query=urlencode({k: v for k, v in filters.items() if v and k != "cursor"}),
        statuses=[s.value for s in JobStatus],
        principal=principal,
    )


@router.get("/jobs/rows")
def jobs_rows(
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: DataPrincipal,
    filters: JobFilters,
) -> HTMLResponse:
    """The table's body alone, which the jobs page polls (htmx) for live status."""
    rows, _ = _job_rows(sessions, settings, principal, filters)
    return _render(request, "_job_rows.html", rows=rows, filters=filters)


def _job(sessions: SessionsDep, principal: Principal, job_id: str) -> JobOut:
    with read_only(sessions) as session:
        return JobOut.of(get_job(session, job_id, principal.scope))


def _result(sessions: SessionsDep, principal: Principal, job_id: str) -> dict[str, Any]:
    """A succeeded job's metrics, as GET /v1/jobs/{id}/metrics serves them."""
    result = routes_jobs.succeeded_job(sessions, principal, job_id, "metrics").result
    assert result is not None  # a succeeded job has its result
    return result


def _plan(
    spec: dict[str, Any],
    settings: SettingsDep,
    sessions: SessionsDep,
    principal: Principal,
    storage: StorageCallsDep,
) -> tuple[Any, str | None]:
    """Validate's answer for a stored spec (counts, effective weights, warnings), or why
    there is none now (an upload since deleted)."""
    try:
        # The job stores its spec with every default filled in; validated as it is, each
        # default of an option the loss ignores would read as set ("loss.gamma does not
        # apply"). Without them, the spec means the same and warns as it did at submit.
        stored = JobSpec.model_validate(spec).model_dump(mode="json", exclude_defaults=True)
        parsed = JobSpec.model_validate(stored)
        return routes_jobs.validate_job(parsed, settings, sessions, principal, storage), None
    except (DomainError, ValidationError) as refused:
        return None, str(refused)


@router.get("/jobs/{job_id}")
def job_page(
    request: Request,
    job_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    storage: StorageCallsDep,
    principal: PagePrincipal,
) -> HTMLResponse:
    job = _job(sessions, principal, job_id)
    report, report_error = _plan(job.spec, settings, sessions, principal, storage)
    metrics = None
    if job.status == JobStatus.succeeded:
        metrics = _result(sessions, principal, job_id)
    return _render(
        request,
        "job.html",
        job=job,
        spec_text=json.dumps(views.shown_spec(job.spec), indent=2),
        epochs_total=views.epochs_total(job.spec),
        remedy=views.remedy(job.spec),
        dataset=views.dataset_name(job.spec),
        report=report,
        report_error=report_error,
        metrics=metrics,
        heat=views.heat_map(metrics["final"]["confusion_matrix"]) if metrics else None,
        names=views.class_names(metrics) if metrics else (report.class_names if report else []),
    )


@router.get("/jobs/{job_id}/status")
def job_status(
    request: Request, job_id: str, sessions: SessionsDep, principal: DataPrincipal
) -> HTMLResponse:
    """The job page's status line, which it polls (htmx) until the job ends."""
    return _render(request, "_job_status.html", job=_job(sessions, principal, job_id))


@router.post("/jobs/{job_id}/cancel", dependencies=[SameOrigin])
def cancel(
    job_id: str, sessions: SessionsDep, settings: SettingsDep, principal: DataPrincipal
) -> Response:
    with suppress(JobStateConflict):  # it ended meanwhile: the page shows how
        routes_jobs.cancel_job(job_id, sessions, settings, principal)
    return RedirectResponse(f"{UI_PREFIX}/jobs/{job_id}", status_code=303)


@router.get("/new")
def new_job_page(
    request: Request, sessions: SessionsDep, settings: SettingsDep, principal: PagePrincipal
) -> HTMLResponse:
    """The spec editor, with a form for the fields a remedy comparison changes most; the
    datasets offered are GET /v1/datasets's (the caller's uploads, built-ins present)."""
    datasets = routes_datasets.list_datasets(sessions, settings, principal).data
    choices = [views.dataset_choice(item) for item in datasets if item.available]
    return _render(
        request,
        "new.html",
        datasets=choices,
        losses=get_args(LossType),
        samplers=get_args(Sampler),
        class_weights=["none", "balanced", "inverse_sqrt"],
    )


@router.get("/compare")
def compare_page(
    request: Request,
    sessions: SessionsDep,
    principal: PagePrincipal,
    ids: Annotated[list[str], Query(max_length=MAX_COMPARE)] = [],  # noqa: B006
) -> HTMLResponse:
    ids = list(dict.fromkeys(ids))
    if not 2 <= len(ids) <= MAX_COMPARE:
        return _render(request, "compare.html", 422, error="pick 2 to 8 jobs to compare", jobs=[])
    jobs = [_job(sessions, principal, job_id) for job_id in ids]
    metrics = {
        job.id: _result(sessions, principal, job.id)
        for job in jobs
        if job.status == JobStatus.succeeded
    }
    return _render(
        request,
        "compare.html",
        error=None,
        jobs=jobs,
        metrics=metrics,
        remedies={job.id: views.remedy(job.spec) for job in jobs},
        differing=views.differing_fields([job.spec for job in jobs]),
        recall_rows=views.recall_rows([metrics.get(job.id) for job in jobs]),
        heats={i: views.heat_map(m["final"]["confusion_matrix"]) for i, m in metrics.items()},
        # Each job's own classes: jobs compared may keep different ones.
        class_names={i: views.class_names(m) for i, m in metrics.items()},
    )


@router.get("/sweeps")
def sweeps_page(
    request: Request,
    sessions: SessionsDep,
    principal: PagePrincipal,
    id: Filter = None,
    cursor: Filter = None,
) -> Response:
    if id:
        return RedirectResponse(f"{UI_PREFIX}/sweeps/{quote(id, safe='')}", status_code=303)
    page = routes_sweeps.list_sweeps(sessions, principal, limit=PAGE_SIZE, cursor=cursor or None)
    return _render(request, "sweeps.html", sweep=None, page=page, cursor=cursor)


@router.get("/sweeps/{sweep_id}")
def sweep_page(
    request: Request, sweep_id: str, sessions: SessionsDep, principal: PagePrincipal
) -> HTMLResponse:
    sweep = routes_sweeps.get_sweep(sweep_id, sessions, principal)
    return _render(request, "sweeps.html", sweep=sweep, page=None)


@router.get("/sweeps/{sweep_id}/compare.png")
def sweep_chart(sweep_id: str, sessions: SessionsDep, principal: DataPrincipal) -> Response:
    return routes_sweeps.get_sweep_plot(sweep_id, sessions, principal)
