"""labels on jobs (a table indexed by key and value) and sweeps; jobs: dataset and loss
type to filter on, when deleted and when their files were removed; store usage per tenant

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from counterweight.service.store.clock import db_now

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_labels",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", name="fk_job_labels_job")),
        sa.Column("key", sa.String(63)),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "key", name="pk_job_labels"),
    )
    op.create_index("ix_job_labels_key_value", "job_labels", ["key", "value", "job_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dataset", sa.String(64), nullable=True))
        batch.add_column(sa.Column("loss_type", sa.String(32), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("artifacts_removed_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_index("ix_jobs_dataset", ["dataset", "status"])
        batch.create_index("ix_jobs_artifacts_kept", ["artifacts_removed_at", "finished_at"])
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("labels", sa.JSON(), server_default="{}", nullable=False))
    op.create_table(
        "store_usage",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column(
            "measured_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("tenant", name="pk_store_usage"),
    )
    _backfill_filters()


def _backfill_filters() -> None:
    """Each stored spec's dataset and loss type, so that the filters find older jobs."""
    bind = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.String()), sa.column("spec", sa.Text()))
    update = sa.text("UPDATE jobs SET dataset = :dataset, loss_type = :loss WHERE id = :id")
    for job_id, spec in bind.execute(sa.select(jobs.c.id, sa.cast(jobs.c.spec, sa.Text()))):
        dataset, loss = _filters(json.loads(spec) if isinstance(spec, str) else spec)
        bind.execute(update, {"dataset": dataset, "loss": loss, "id": job_id})


def _filters(spec: object) -> tuple[str | None, str | None]:
    if not isinstance(spec, dict):
        return None, None
    dataset, loss = spec.get("dataset"), spec.get("loss")
    name = None
    if isinstance(dataset, dict):
        name = dataset.get("id") if dataset.get("name") == "uploaded" else dataset.get("name")
    loss_type = loss.get("type", "cross_entropy") if isinstance(loss, dict) else "cross_entropy"
    return (name if isinstance(name, str) else None), loss_type


def downgrade() -> None:
    op.drop_table("store_usage")
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("labels")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_artifacts_kept")
        batch.drop_index("ix_jobs_dataset")
        batch.drop_column("artifacts_removed_at")
        batch.drop_column("deleted_at")
        batch.drop_column("loss_type")
        batch.drop_column("dataset")
    op.drop_index("ix_job_labels_key_value", table_name="job_labels")
    op.drop_table("job_labels")
