"""Alembic environment: one history for SQLite and Postgres."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from counterweight.service.store.engine import make_engine
from counterweight.service.store.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # API and workers may start together: let one of them migrate, the rest wait.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7283716)")
        context.run_migrations()


url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set (service.store.engine.alembic_config does it)"
engine = make_engine(url)
with engine.connect() as connection:
    run(connection)
engine.dispose()
