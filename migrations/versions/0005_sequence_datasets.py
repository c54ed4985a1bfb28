"""datasets.kind admits "sequences" (sequence labeling uploads)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = ("features", "images")
NEW_KINDS = (*OLD_KINDS, "sequences")


def _kind(kinds: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(
        *kinds, name="dataset_kind", native_enum=False, create_constraint=True, length=16
    )


def upgrade() -> None:
    # The kind is a VARCHAR with a CHECK constraint; batch mode rebuilds that constraint
    # (SQLite copies the table; Postgres alters it in place).
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("kind", type_=_kind(NEW_KINDS), existing_type=_kind(OLD_KINDS))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("kind", type_=_kind(OLD_KINDS), existing_type=_kind(NEW_KINDS))
