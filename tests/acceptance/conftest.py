"""Acceptance tests run the service as a user does: separate API and worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import Service
from tests.s3server import S3Server

# Slow enough (about 1 s an epoch on a 2-core CPU) to stop a job in the middle.
SLOW_DIGITS: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "width": 512, "depth": 3},
    "train": {"epochs": 10, "batch_size": 8, "seed": 1},
}


# Short leases so that a killed worker's job is rescued within seconds.
SHORT_LEASES = {
    "lease_seconds": "3",
    "heartbeat_seconds": "0.5",
    "sweep_seconds": "0.5",
    "retry_backoff_seconds": "0.5",
}


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path, database_url, **SHORT_LEASES)
    try:
        running.start_api()
        yield running
    finally:
        running.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[S3Server]:
    """The S3 test server, an artifact store shared by every process (store.settings())."""
    with S3Server(tmp_path) as server:
        yield server
