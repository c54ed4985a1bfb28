"""/v1/sweeps: a grid over a base spec -> jobs, and a comparison table across the grid."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from counterweight.service.api import sweeps
from counterweight.service.api.admission import admit
from counterweight.service.api.deps import PrincipalDep, SessionsDep, SettingsDep, StorageCallsDep
from counterweight.service.api.schemas import SweepIn, SweepOut, SweepPage, SweepSummary
from counterweight.service.store.engine import read_only, transaction
from counterweight.service.store.sweeps import cancel_sweep as cancel_sweep_jobs
from counterweight.service.store.sweeps import create_sweep
from counterweight.service.store.sweeps import get_sweep as find_sweep
from counterweight.service.store.sweeps import list_sweeps as find_sweeps

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No sweep with this id"}}


@router.post(
    "",
    status_code=202,
    responses={429: {"description": "The jobs would exceed the tenant's queued-jobs limit"}},
)
def submit_sweep(
    body: SweepIn,
    response: Response,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
) -> SweepOut:
    """Queue one job per grid combination; every one is validated before any is queued."""
    stored_uploads: set[str] = set()  # each upload is looked for in the store once
    base = body.base_with_notify()
    sweeps.check_inline_weights(base, body.grid, settings.max_inline_weights)
    combinations = sweeps.expand(base, body.grid)
    for combination in combinations:  # each job carries the sweep's labels too
        sweeps.add_labels(combination.spec, body.labels)
    specs = sweeps.validate(
        combinations,
        settings.resolved_data_root,
        settings.home,
        admit=lambda spec: admit(spec, settings, sessions, principal, storage, stored_uploads),
    )
    with transaction(sessions) as session:
        sweep, jobs = create_sweep(
            session,
            base,
            body.grid,
            specs,
            labels=body.labels,
            tenant=principal.tenant,
            max_queued=settings.max_queued_jobs_per_tenant,
        )
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return SweepOut.of(sweep, jobs)


@router.get("")
def list_sweeps(
    sessions: SessionsDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(min_length=1, description="`next_cursor` of the previous page")
    ] = None,
) -> SweepPage:
    """The caller's sweeps, newest first, with their status and progress; pass
    `next_cursor` back as `cursor` for the next page."""
    with read_only(sessions) as session:
        page, next_cursor = find_sweeps(session, limit=limit, cursor=cursor, tenant=principal.scope)
        data = [SweepSummary.of(sweep, list(statuses)) for sweep, statuses in page]
    return SweepPage(data=data, next_cursor=next_cursor)


@router.post(
    "/{sweep_id}/cancel",
    responses={**ERRORS, 409: {"description": "Every job of the sweep has ended"}},
)
def cancel_sweep(sweep_id: str, sessions: SessionsDep, principal: PrincipalDep) -> SweepOut:
    """Cancel the sweep's jobs that have not ended: a queued one at once, a running one
    within about COUNTERWEIGHT_HEARTBEAT_SECONDS (as POST /v1/jobs/{id}/cancel)."""
    with transaction(sessions) as session:
        sweep, jobs = cancel_sweep_jobs(session, sweep_id, principal.scope)
        return SweepOut.of(sweep, jobs)


@router.get("/{sweep_id}", responses=ERRORS)
def get_sweep(sweep_id: str, sessions: SessionsDep, principal: PrincipalDep) -> SweepOut:
    with read_only(sessions) as session:
        sweep, jobs = find_sweep(session, sweep_id, principal.scope)
    return SweepOut.of(sweep, jobs)


@router.get(
    "/{sweep_id}/plots/compare.png",
    responses={**ERRORS, 200: {"content": {"image/png": {}}}},
    response_class=Response,
)
def get_sweep_plot(sweep_id: str, sessions: SessionsDep, principal: PrincipalDep) -> Response:
    """Each cell's mean test metrics with sample-std error bars, rendered from the jobs
    that have succeeded so far."""
    with read_only(sessions) as session:
        sweep, jobs = find_sweep(session, sweep_id, principal.scope)
    rows, _ = sweeps.table(sweep, jobs)
    return Response(content=_compare_png(rows), media_type="image/png")


def _cell_label(cell: dict[str, Any]) -> str:
    return "\n".join(f"{path}={value}" for path, value in cell.items()) or "base"


def _compare_png(rows: list[dict[str, Any]]) -> bytes:
    # Imported here: matplotlib takes a while to import and only this route needs it.
    # Figure without pyplot: no global state, so concurrent requests cannot mix figures.
    from matplotlib.figure import Figure

    from counterweight.service.figures import png

    width = 0.8 / len(sweeps.METRICS)
    figure = Figure(figsize=(min(40.0, 2.0 + 1.2 * len(rows)), 4.8), layout="constrained")
    axes = figure.add_subplot()
    for i, metric in enumerate(sweeps.METRICS):
        means = [_number(row[metric]["mean"]) for row in rows]
        stds = [_number(row[metric]["std"], 0.0) for row in rows]
        positions = [x + (i - (len(sweeps.METRICS) - 1) / 2) * width for x in range(len(rows))]
        axes.bar(positions, means, width, yerr=stds, capsize=3, label=metric)
    axes.set_xticks(range(len(rows)), [_cell_label(row["cell"]) for row in rows], fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("test split (mean ± sample std over seeds)")
    axes.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    if not any(row["n"] for row in rows):
        axes.text(0.5, 0.5, "no job has succeeded yet", ha="center", transform=axes.transAxes)
    return png(figure, dpi=100)  # the grid's values drawn as written, never as mathtext


def _number(value: float | None, missing: float = math.nan) -> float:
    # A cell without succeeded jobs has null means: matplotlib leaves a NaN bar out.
    return missing if value is None else value
