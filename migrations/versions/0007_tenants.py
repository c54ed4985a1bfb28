"""create api_keys; jobs, datasets and sweeps belong to a tenant

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from counterweight.service.store.clock import db_now

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows created before tenants existed belong to the tenant of the open (keyless) service.
DEFAULT_TENANT = "default"


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant", sa.String(length=64), server_default=DEFAULT_TENANT, nullable=False)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])
    # Batch mode: SQLite rebuilds the table to change a unique constraint.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(_tenant())
        batch.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        batch.create_unique_constraint(
            "uq_jobs_tenant_idempotency_key", ["tenant", "idempotency_key"]
        )
        batch.create_index("ix_jobs_tenant_created", ["tenant", "created_at", "id"])
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(_tenant())
        batch.create_index("ix_datasets_tenant_created", ["tenant", "created_at", "id"])
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(_tenant())
        batch.create_index("ix_sweeps_tenant_created", ["tenant", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_index("ix_sweeps_tenant_created")
        batch.drop_column("tenant")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_index("ix_datasets_tenant_created")
        batch.drop_column("tenant")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_created")
        batch.drop_constraint("uq_jobs_tenant_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
        batch.drop_column("tenant")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
