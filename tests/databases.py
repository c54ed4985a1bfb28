"""Throwaway Postgres databases for tests and benchmarks.

Each gets a fresh database created through COUNTERWEIGHT_TEST_POSTGRES_URL
(default: the local server's `test` database, used only to create and drop
the others).
"""

from __future__ import annotations

import os
import uuid

import psycopg
from sqlalchemy.engine import make_url

from counterweight.service.store.engine import libpq_dsn

POSTGRES_ADMIN_URL = os.environ.get(
    "COUNTERWEIGHT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def new_postgres_database() -> str:
    name = f"cw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_dsn(POSTGRES_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(libpq_dsn(POSTGRES_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
