"""GET /metrics: Prometheus text exposition.

Jobs and workers are read from the database when scraped, not counted in this
process: the API may run as several processes, restart, or never see a job
that a worker finished, and the database is what all of them share. Each
scrape costs three aggregate queries, one read of the recently heard-from
workers and one of the store usage the janitor measured (never a listing of the
store). HTTP latency is the one figure that belongs to the process serving the
requests, so it is a histogram fed by a middleware, summed over the API's
processes when there are several.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Float, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from counterweight.service.errors import DatabaseUnavailable
from counterweight.service.store.availability import check_writable
from counterweight.service.store.engine import read_only
from counterweight.service.store.lifecycle import usage_by_tenant
from counterweight.service.store.models import Job, JobStatus, WorkerRecord
from counterweight.service.store.queue.workers import is_live

router = APIRouter(tags=["health"])
# prometheus_client's multiprocess mode: set (service.cli) before an API process starts.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# generate_latest writes the 0.0.4 text format, which every Prometheus server reads.
PROMETHEUS_TEXT = CONTENT_TYPE_PLAIN_0_0_4

# Seconds: from a queue that keeps up (sub-second) to jobs that wait or train for hours.
JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# A worker that went silent (SIGKILL, lost machine) keeps its last heartbeat on show
# this long, so that an alert on its age can fire; after that it is history.
STALE_WORKER_WINDOW_SECONDS = 3600.0


class seconds_between(FunctionElement[float]):  # lower case: reads like a SQL function
    """`later - earlier` in seconds, for timestamps as each backend stores them."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between, "postgresql")
def _pg_seconds_between(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


@compiles(seconds_between, "sqlite")
def _sqlite_seconds_between(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def _histogram_query(seconds: ColumnElement[float]) -> list[ColumnElement[Any]]:
    """count, sum and one cumulative count per bucket: the database does the counting."""
    in_bucket = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in JOB_BUCKETS]
    return [func.count(), func.coalesce(func.sum(seconds), 0.0), *in_bucket]


def _buckets(row: Sequence[Any]) -> tuple[list[tuple[str, float]], float]:
    """A row of _histogram_query as HistogramMetricFamily takes it: (buckets, sum)."""
    count, total, *cumulative = row
    # "5.0", not "5": the bound as prometheus_client's own histograms write it.
    buckets = [(str(float(b)), float(n or 0)) for b, n in zip(JOB_BUCKETS, cumulative, strict=True)]
    return [*buckets, ("+Inf", float(count))], float(total)


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; the database clock writes them in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class DatabaseCollector(Collector):
    """Job and worker figures, read from the database at each scrape."""

    def __init__(self, sessions: sessionmaker[Session], *, live_seconds: float) -> None:
        self._sessions = sessions
        self._live_seconds = live_seconds

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "counterweight_database_up",
            "Whether the last scrape could write the database (as /readyz) and read it.",
        )
        try:
            check_writable(self._sessions)
            writable = True
        except DatabaseUnavailable:
            writable = False  # a read-only database still has figures to show
        try:
            with read_only(self._sessions) as session:
                metrics = [*self._jobs(session), *self._workers(session), *_store(session)]
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up  # the job and worker figures are unknown, not zero
            return
        up.add_metric([], int(writable))
        yield up
        yield from metrics

    def _jobs(self, session: Session) -> Sequence[Metric]:
        jobs = GaugeMetricFamily("counterweight_jobs", "Jobs by status.", labels=["status"])
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status, 0))

        wait = HistogramMetricFamily(
            "counterweight_job_queue_wait_seconds",
            "From submission to the first start, over every job that has started.",
        )
        waited = seconds_between(Job.started_at, Job.created_at)
        row = session.execute(
            select(*_histogram_query(waited)).where(Job.started_at.is_not(None))
        ).one()
        wait.add_metric([], *_buckets(row))

        run = HistogramMetricFamily(
            "counterweight_job_run_seconds",
            "From first start to the end, retries included, over every ended job, by outcome.",
            labels=["status"],
        )
        ran = seconds_between(Job.finished_at, Job.started_at)
        for status, *rest in session.execute(
            select(Job.status, *_histogram_query(ran))
            .where(Job.started_at.is_not(None), Job.finished_at.is_not(None))
            .group_by(Job.status)
        ):
            run.add_metric([JobStatus(status).value], *_buckets(rest))
        return [jobs, wait, run]

    def _workers(self, session: Session) -> Sequence[Metric]:
        live = GaugeMetricFamily(
            "counterweight_workers_live",
            "Workers not stopped whose heartbeat is younger than the lease.",
        )
        last = GaugeMetricFamily(
            "counterweight_worker_last_heartbeat_timestamp_seconds",
            "Unix time of each running worker's last heartbeat (kept an hour after it went "
            "silent: alert on time() minus this).",
            labels=["worker", "hostname", "device"],
        )
        rows = session.execute(
            select(
                WorkerRecord.id, WorkerRecord.hostname, WorkerRecord.device,
                WorkerRecord.heartbeat_at, is_live(self._live_seconds),
            ).where(is_live(STALE_WORKER_WINDOW_SECONDS))
        ).all()  # fmt: skip
        live.add_metric([], sum(1 for row in rows if row[4]))
        for worker_id, hostname, device, heartbeat_at, _ in rows:
            last.add_metric([worker_id, hostname, device], _utc(heartbeat_at).timestamp())
        return [live, last]


def _store(session: Session) -> Sequence[Metric]:
    """The artifact store's usage per tenant, as the janitor last measured it
    (service.api.janitor): a scrape never lists the store."""
    size = GaugeMetricFamily(
        "counterweight_store_bytes",
        "Bytes each tenant keeps in the artifact store: job files and uploads ('-': files "
        "of no known job or upload).",
        labels=["tenant"],
    )
    files = GaugeMetricFamily(
        "counterweight_store_files",
        "Files each tenant keeps in the artifact store.",
        labels=["tenant"],
    )
    measured = GaugeMetricFamily(
        "counterweight_store_usage_measured_timestamp_seconds",
        "Unix time the usage of each tenant was last measured (every "
        "COUNTERWEIGHT_JANITOR_SECONDS).",
        labels=["tenant"],
    )
    for tenant, size_bytes, count, measured_at in usage_by_tenant(session):
        size.add_metric([tenant], size_bytes)
        files.add_metric([tenant], count)
        measured.add_metric([tenant], _utc(measured_at).timestamp())
    return [size, files, measured]


class RequestLatency:
    """ASGI middleware: time to the response's status line, by method and route template.

    Timed to the start of the response rather than its end, so that a server-sent
    event stream, which lasts as long as its job, counts how fast it was answered.
    Paths that match no route share one label, or random URLs would make new series.
    """

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        def observe(status: int) -> None:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.histogram.labels(scope["method"], route, str(status)).observe(elapsed)

        async def timed_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                observe(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if not answered:
                observe(500)  # what the server's error middleware is about to answer
            raise


def install(app: FastAPI, sessions: sessionmaker[Session], *, live_seconds: float) -> None:
    """Serve GET /metrics from `app` and time its requests. One registry per app, so
    that apps built side by side (tests) never share series."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(sessions, live_seconds=live_seconds))
    latency_registry: CollectorRegistry | None = registry
    if os.environ.get(MULTIPROCESS_DIR):
        # Several API processes behind one port (`counterweight api --processes N`):
        # each writes its latency to files in that directory, and a scrape, whichever
        # process answers it, sums them all.
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        latency_registry = None
    latency = Histogram(
        "counterweight_http_request_duration_seconds",
        "Time from a request's arrival to its response's status line.",
        ["method", "route", "status"],
        buckets=HTTP_BUCKETS,
        registry=latency_registry,
    )
    app.state.metrics_registry = registry
    app.add_middleware(RequestLatency, histogram=latency)
    app.include_router(router)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_TEXT: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    """Prometheus exposition: jobs by status, queue wait and run time, live workers and
    their heartbeats, HTTP latency, the artifact store's usage per tenant. No job or
    dataset ids; tenant names only on the store's usage."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=PROMETHEUS_TEXT)
