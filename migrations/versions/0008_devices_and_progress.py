"""jobs: CUDA devices needed, attempts forgiven and the epochs they reached; workers: CUDA devices

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_COLUMNS = ("cuda_devices_needed", "forgiven_attempts", "progress_epoch", "attempt_start_epoch")
# As service.store.queue.devices caps it; copied so that this migration never changes.
MAX_CUDA_DEVICES_NEEDED = 1_000_000


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in JOB_COLUMNS:
            batch.add_column(_count(name))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(_count("cuda_devices"))
    _backfill_cuda_devices_needed()
    _backfill_progress_epoch()


def _backfill_cuda_devices_needed() -> None:
    """From each stored spec's train.device, so that a queued cuda job is not handed to a
    CPU worker after the upgrade. Only specs that mention cuda at all are read."""
    bind = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.String()), sa.column("spec", sa.Text()))
    rows = bind.execute(
        sa.select(jobs.c.id, jobs.c.spec).where(sa.cast(jobs.c.spec, sa.Text()).like("%cuda%"))
    ).all()
    update = sa.text("UPDATE jobs SET cuda_devices_needed = :needed WHERE id = :id")
    for job_id, spec in rows:
        needed = _needed(json.loads(spec) if isinstance(spec, str) else spec)
        if needed:
            bind.execute(update, {"needed": needed, "id": job_id})


def _needed(spec: object) -> int:
    train = spec.get("train") if isinstance(spec, dict) else None
    device = train.get("device") if isinstance(train, dict) else None
    if device == "cuda":
        return 1
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdecimal():
        return min(int(device[5:]) + 1, MAX_CUDA_DEVICES_NEEDED)
    return 0


def _backfill_progress_epoch() -> None:
    """progress.epoch of every job that reported one. A running job's attempt starts
    from there too: that attempt counts unless it gets further after the upgrade."""
    if op.get_bind().dialect.name == "postgresql":
        epoch = "CAST(progress ->> 'epoch' AS INTEGER)"
    else:
        epoch = "CAST(json_extract(progress, '$.epoch') AS INTEGER)"
    op.execute(
        f"UPDATE jobs SET progress_epoch = COALESCE({epoch}, 0), "
        f"attempt_start_epoch = COALESCE({epoch}, 0) WHERE progress IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("cuda_devices")
    with op.batch_alter_table("jobs") as batch:
        for name in reversed(JOB_COLUMNS):
            batch.drop_column(name)
