"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, Boolean, Integer, String, column, insert, inspect, select, table, text

from counterweight.service.store.engine import alembic_config, make_engine, upgrade
from counterweight.service.store.models import Base, Job, WorkerRecord

# The jobs table's columns that every migration has had, to store jobs at an old revision.
OLD_JOBS = table(
    "jobs",
    column("id", String()),
    column("status", String()),
    column("spec", JSON()),
    column("priority", Integer()),
    column("attempt", Integer()),
    column("max_attempts", Integer()),
    column("cancel_requested", Boolean()),
    column("progress", JSON()),
    column("spec_fingerprint", String()),
)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_migrations_match_models(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert {"jobs", "alembic_version"} <= tables


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_upgrade_twice_is_a_no_op(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    upgrade(empty_database_url)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_0008_backfills_device_needs_and_progress_from_stored_jobs(
    empty_database_url: str,
) -> None:
    """Jobs stored before 0008 keep their place: a queued cuda job is not handed to a CPU
    worker after the upgrade, and a running job's reported epoch is where its attempt
    is taken to have started."""
    upgrade(empty_database_url)  # creates the database as the service does; then back to 0007
    command.downgrade(alembic_config(empty_database_url), "0007")
    jobs = OLD_JOBS
    stored = {  # id: (status, train.device, progress)
        "a" * 32: ("queued", "cuda:2", None),
        "b" * 32: ("queued", "cuda", None),
        "c" * 32: ("queued", "auto", None),
        "d" * 32: ("running", "cpu", {"epoch": 3, "epochs": 10, "fraction": 0.3}),
        "e" * 32: ("succeeded", "cuda:0", {"epoch": 5, "epochs": 5, "fraction": 1.0}),
    }
    engine = make_engine(empty_database_url)
    with engine.begin() as conn:
        for job_id, (status, device, progress) in stored.items():
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    status=status,
                    spec={"dataset": {"name": "digits"}, "train": {"device": device}},
                    priority=0,
                    attempt=int(status != "queued"),
                    max_attempts=3,
                    cancel_requested=False,
                    progress=progress,
                    spec_fingerprint="f",
                )
            )
        conn.execute(
            text("INSERT INTO workers (id, hostname, pid, device) VALUES ('w', 'h', 1, 'x')")
        )
    upgrade(empty_database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Job.id,
                Job.cuda_devices_needed,
                Job.progress_epoch,
                Job.attempt_start_epoch,
                Job.forgiven_attempts,
            )
        ).all()
        worker_devices = conn.execute(select(WorkerRecord.cuda_devices)).scalars().all()
    engine.dispose()
    assert {row[0]: tuple(row[1:]) for row in rows} == {
        "a" * 32: (3, 0, 0, 0),
        "b" * 32: (1, 0, 0, 0),
        "c" * 32: (0, 0, 0, 0),
        "d" * 32: (0, 3, 3, 0),
        "e" * 32: (1, 5, 5, 0),
    }
    assert worker_devices == [0]  # registered before workers said what they have: a CPU


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_0010_backfills_dataset_and_loss_type_of_stored_jobs(empty_database_url: str) -> None:
    """Jobs stored before 0010 are found by the dataset and loss type filters."""
    upgrade(empty_database_url)
    command.downgrade(alembic_config(empty_database_url), "0009")
    stored = {
        "a" * 32: {"dataset": {"name": "digits"}, "loss": {"type": "focal"}},
        "b" * 32: {"dataset": {"name": "uploaded", "id": "f" * 32}},
    }
    engine = make_engine(empty_database_url)
    with engine.begin() as conn:
        for job_id, stored_spec in stored.items():
            conn.execute(
                insert(OLD_JOBS).values(
                    id=job_id,
                    status="queued",
                    spec=stored_spec,
                    priority=0,
                    attempt=0,
                    max_attempts=3,
                    cancel_requested=False,
                    spec_fingerprint="f",
                )
            )
    upgrade(empty_database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.dataset, Job.loss_type)).all()
    engine.dispose()
    assert {row[0]: tuple(row[1:]) for row in rows} == {
        "a" * 32: ("digits", "focal"),
        "b" * 32: ("f" * 32, "cross_entropy"),
    }
