"""SQLAlchemy models. Alembic migrations in `migrations/` must match these."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from counterweight.service.data.npz import DatasetKind
from counterweight.service.store.clock import db_now


class Base(DeclarativeBase):
    # Named constraints, so that migrations can refer to them on both backends.
    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "ix": "ix_%(table_name)s_%(column_0_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


def new_job_id() -> str:
    return uuid.uuid4().hex


# Owner of everything created while the service runs open (no API keys configured).
DEFAULT_TENANT = "default"


class Sweep(Base):
    """A grid over a base spec (service.store.sweeps); its jobs point back here with sweep_id."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    # As the client sent them: the table's cells are re-derived from these and the jobs.
    base: Mapped[dict[str, Any]]
    grid: Mapped[dict[str, Any]]  # {"<dotted.path>": [values...]}, in the client's order
    tenant: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    # The client's labels (service.labels); each of its jobs carries them too.
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())

    __table_args__ = (Index("ix_sweeps_tenant_created", "tenant", "created_at"),)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=16, create_constraint=True),
        default=JobStatus.queued,
    )
    spec: Mapped[dict[str, Any]]
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    # Lease: who runs it and until when (database clock). Null when not running.
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # A retried job waits until this time before it can be claimed again.
    run_after: Mapped[datetime] = mapped_column(server_default=db_now())

    progress: Mapped[dict[str, Any] | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)

    # What the job's train.device needs of a worker (service.store.queue.devices):
    # 0 any worker, 1 a CUDA device, N + 1 for cuda:N. A worker claims only the
    # jobs it can run.
    cuda_devices_needed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Attempts lost to a dead worker while the job made progress: they do not count
    # against max_attempts (service.store.queue.sweeper). The highest progress.epoch
    # any attempt reported, and its value when the current attempt was claimed, are
    # how the database sees that progress.
    forgiven_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempt_start_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the job waits for, as its worker says (the artifact store unreachable); null
    # when nothing holds it up. Shown as `waiting` in GET /v1/jobs/{id}.
    waiting: Mapped[str | None] = mapped_column(Text)

    # Who submitted it (service.store.keys); another tenant's key sees a 404 for this job.
    tenant: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    # Unique per tenant, so that two tenants' keys never replay each other's jobs.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    spec_fingerprint: Mapped[str] = mapped_column(String(64))
    # The sweep that queued this job, if any (GET /v1/sweeps/{id} reads its jobs by it).
    sweep_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("sweeps.id", name="fk_jobs_sweep"), index=True
    )

    # What GET /v1/jobs filters on besides labels, out of the spec: the dataset (a
    # built-in's name, an upload's id) and the loss type.
    dataset: Mapped[str | None] = mapped_column(String(64))
    loss_type: Mapped[str | None] = mapped_column(String(32))

    created_at: Mapped[datetime] = mapped_column(server_default=db_now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # DELETE /v1/jobs/{id}: hidden from every read from then on (a 404, as a missing job).
    deleted_at: Mapped[datetime | None]
    # When the janitor removed the job's files from the artifact store (a deleted job's,
    # or by COUNTERWEIGHT_RETENTION_DAYS); null while they are kept.
    artifacts_removed_at: Mapped[datetime | None]

    __table_args__ = (
        # The claim query filters on status and orders by priority, then age.
        Index("ix_jobs_claim", "status", "priority", "created_at"),
        # Listing newest first (a backward scan serves the descending order).
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_tenant_created", "tenant", "created_at", "id"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        # DELETE /v1/datasets/{id} looks for the queued and running jobs of an upload.
        Index("ix_jobs_dataset", "dataset", "status"),
        # The janitor's scan: ended jobs whose files are still kept, oldest first.
        Index("ix_jobs_artifacts_kept", "artifacts_removed_at", "finished_at"),
    )


class JobLabel(Base):
    """One label of a job (service.labels), for GET /v1/jobs?label=key:value: the
    (key, value) index finds a label's jobs on both backends. The job's spec holds the
    same labels, which is what a read returns."""

    __tablename__ = "job_labels"

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", name="fk_job_labels_job"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))

    __table_args__ = (Index("ix_job_labels_key_value", "key", "value", "job_id"),)


class Dataset(Base):
    """An uploaded dataset (service.store.datasets); its arrays live in
    <home>/datasets/<id>.npz (service.data.uploads)."""

    __tablename__ = "datasets"

    # Chosen before the row exists (service.api.uploads): it also names the file.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # As the client named it, for display only: never used to build a path.
    filename: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[DatasetKind] = mapped_column(
        Enum(DatasetKind, name="dataset_kind", native_enum=False, length=16, create_constraint=True)
    )
    # {"x_train": [N, ...], "y_train": [N], ...}: one entry per array in the file.
    shapes: Mapped[dict[str, Any]]
    # {"train": [n_0, n_1, ...], "test": [...]}: samples per class.
    class_counts: Mapped[dict[str, Any]]
    num_classes: Mapped[int] = mapped_column(Integer)
    # The file's class_names array, or null when it has none (names are then "0".."k-1").
    class_names: Mapped[list[str] | None] = mapped_column(JSON)
    has_sample_weight: Mapped[bool] = mapped_column(Boolean)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    tenant: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())

    __table_args__ = (
        Index("ix_datasets_created", "created_at", "id"),
        Index("ix_datasets_tenant_created", "tenant", "created_at", "id"),
    )


class JobEvent(Base):
    """One entry of a job's event stream (service.store.queue.events, GET /v1/jobs/{id}/events).

    seq numbers a job's events 1, 2, 3 ... in commit order; id orders all events
    across jobs, so the API's poller can fetch everything new with one query.
    """

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", name="fk_job_events_job"))
    seq: Mapped[int] = mapped_column(Integer)
    # "status" | "progress" | "epoch"
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())
    # The webhook outbox (service.store.webhooks.outbox): true on a status or epoch event
    # until a dispatcher has turned it into deliveries, in the transaction that does so.
    webhook_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        # The unique (job_id, seq) index also serves replays and max(seq) per job.
        UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),
        # Partial: the outbox's few pending rows, however long the table grows. Each
        # backend's condition is the text its query has (SQLite: "= 1"), or it is not used.
        Index(
            "ix_job_events_webhook_pending",
            "id",
            sqlite_where=text("webhook_pending = 1"),
            postgresql_where=text("webhook_pending"),
        ),
    )


class WorkerRecord(Base):
    """A worker process, registered at start with a fresh id (GET /v1/workers).

    A worker is live while it keeps heartbeat_at fresh and has not set stopped_at;
    one that was SIGKILLed simply goes stale.
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(128))  # "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
    # CUDA devices it can train on (0: a CPU worker); it claims jobs needing no more.
    cuda_devices: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    current_job_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(server_default=db_now())
    heartbeat_at: Mapped[datetime] = mapped_column(server_default=db_now())
    stopped_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_workers_heartbeat", "heartbeat_at"),)


class ApiKey(Base):
    """An API key (service.store.keys). Only its SHA-256 is stored; the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Keys are 256 random bits, so a plain SHA-256 is enough: nothing to brute-force.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The key's first characters, to tell keys apart in listings without revealing them.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())
    revoked_at: Mapped[datetime | None]


class StoreUsage(Base):
    """What each tenant keeps in the artifact store (job files and uploads), as the
    janitor last measured it (service.api.janitor); GET /metrics shows it."""

    __tablename__ = "store_usage"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(Integer)
    measured_at: Mapped[datetime] = mapped_column(server_default=db_now())


class WebhookSubscription(Base):
    """A tenant's standing order for its jobs' events (service.store.webhooks.subscriptions).
    The secret signs its deliveries: kept as given (signing needs it), shown once."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())


class WebhookSecret(Base):
    """The secret that signs the deliveries a job's own `notify` asks for, one per tenant."""

    __tablename__ = "webhook_secrets"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())


class DeliveryState(enum.StrEnum):
    pending = "pending"  # waiting for its next attempt (or for an earlier event's delivery)
    delivering = "delivering"  # leased to a dispatcher, which is sending it
    delivered = "delivered"  # a 2xx answered it
    failed = "failed"  # given up: COUNTERWEIGHT_WEBHOOK_RETRY_SECONDS passed without a 2xx
    cancelled = "cancelled"  # its subscription was deleted first

    @property
    def is_final(self) -> bool:
        return self in (DeliveryState.delivered, DeliveryState.failed, DeliveryState.cancelled)


class WebhookDelivery(Base):
    """One event of one job for one target (the job's `notify`, or a subscription), with
    every attempt at sending it (service.store.webhooks.deliveries)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", name="fk_webhook_deliveries_job")
    )
    event_id: Mapped[int] = mapped_column(Integer)  # job_events.id
    seq: Mapped[int] = mapped_column(Integer)  # job_events.seq: the order per job and target
    event: Mapped[str] = mapped_column(String(16))  # queued ... cancelled, or epoch
    # "notify" (the job's spec), or "subscription:<id>": each target gets a job's events
    # in order, one at a time.
    target: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[str | None] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent, every attempt alike
    state: Mapped[DeliveryState] = mapped_column(
        Enum(
            DeliveryState,
            name="delivery_state",
            native_enum=False,
            length=16,
            create_constraint=True,
        ),
        default=DeliveryState.pending,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims, as a job's attempt
    # [{"attempt", "at", "status_code", "error", "response", "duration_ms"}], newest last
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=db_now())
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("event_id", "target", name="uq_webhook_deliveries_event_target"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_order", "job_id", "target", "seq"),
    )
