"""A client generated from /openapi.json works, as another service would use one.

openapi-python-client (a dev dependency; it needs no network) generates a package from
the live API's document into tmp_path; the test imports it and, against a real API
process and a real worker, submits a tiny job (202), waits for it, reads its typed
metrics and card, downloads its model and a plot, revalidates the model with its ETag
(304), and gets a 422 and a 404 parsed as problem details.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.keys import create_key
from tests.processes import TERMINAL, Service

# The generator knows no image types: PNGs are served to generated code as bytes.
CONFIG = "content_type_overrides:\n  image/png: application/octet-stream\n"
TINY = {
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "width": 16},
    "train": {"epochs": 1},
}


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        _, key = create_key(session, "generated")
    engine.dispose()
    running = Service(tmp_path / "home", database_url, heartbeat_seconds="0.5")
    (tmp_path / "home").mkdir()
    try:
        running.start_api()
        running.start_worker()
        yield running, key
    finally:
        running.stop()


def generate(url: str, where: Path, package: str) -> ModuleType:
    """`openapi-python-client generate` from the live document, then import it."""
    document = where / "openapi.json"
    document.write_bytes(httpx.get(f"{url}/openapi.json").content)
    (where / "config.yml").write_text(CONFIG)
    tools = Path(sys.executable).parent  # its ruff formats what it generates
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(tools / "openapi-python-client"), "generate", "--path", str(document)]
    command += ["--config", str(where / "config.yml"), "--meta", "none"]
    command += ["--output-path", str(where / package)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr  # nothing left out
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(where))


def api(generated: ModuleType, tag: str, name: str) -> Any:
    return importlib.import_module(f"{generated.__name__}.api.{tag}.{name}")


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_a_generated_client_submits_waits_and_reads_a_job(
    service: tuple[Service, str], tmp_path: Path
) -> None:
    running, key = service
    generated = generate(running.url, tmp_path, "cw_generated")
    models = importlib.import_module(f"{generated.__name__}.models")
    client = generated.AuthenticatedClient(base_url=running.url, token=key, timeout=30)
    with client:  # closes its connections
        use(generated, models, client, running)


def use(generated: ModuleType, models: ModuleType, client: Any, running: Service) -> None:
    """What another service does: submit, wait, read; a 422 and a 404 parsed."""
    submit_job, get_job = api(generated, "jobs", "submit_job"), api(generated, "jobs", "get_job")
    submitted = submit_job.sync_detailed(client=client, body=models.JobSpec.from_dict(TINY))
    assert submitted.status_code == 202, submitted.content
    job = submitted.parsed
    assert isinstance(job, models.JobOut) and job.status == models.JobStatus.QUEUED

    deadline = time.monotonic() + 180
    while job.status.value not in TERMINAL:
        assert time.monotonic() < deadline, f"job {job.id} is {job.status}\n{running.logs()}"
        time.sleep(0.2)
        job = get_job.sync(job.id, client=client)
        assert isinstance(job, models.JobOut)
    assert job.status == models.JobStatus.SUCCEEDED, job.error

    metrics = api(generated, "jobs", "get_job_metrics").sync(job.id, client=client)
    assert isinstance(metrics, models.JobMetrics)
    assert [row.epoch for row in metrics.history] == [1]
    assert 0.0 <= metrics.final.balanced_accuracy <= 1.0
    assert [row.class_ for row in metrics.final.per_class] == list(range(10))
    assert isinstance(metrics.history[0].val, models.EpochScores)
    assert metrics.plots == ["curves", "recall", "confusion"]

    card = api(generated, "jobs", "get_model_card").sync(job.id, client=client)
    assert isinstance(card, models.ModelCard) and card.arch == "mlp"
    assert card.class_names == [str(digit) for digit in range(10)]

    get_job_model = api(generated, "jobs", "get_job_model")
    model = get_job_model.sync_detailed(job.id, client=client)
    assert model.status_code == 200 and len(model.parsed.payload.read()) > 1000
    etag = model.headers["etag"]
    again = get_job_model.sync_detailed(job.id, client=client, if_none_match=etag)
    assert again.status_code == 304 and again.content == b""
    plot = api(generated, "results", "get_job_plot").sync(job.id, "curves", client=client)
    assert plot.payload.read().startswith(b"\x89PNG")

    invalid = submit_job.sync_detailed(
        client=client, body=models.JobSpec.from_dict({**TINY, "train": {"epochs": 0}})
    )
    assert invalid.status_code == 422
    problem = invalid.parsed
    assert isinstance(problem, models.HTTPValidationError)
    assert problem.detail == "train.epochs: Input should be greater than 0"
    assert [error.field for error in problem.errors] == ["train.epochs"]
    assert problem.status == 422 and problem.type_.startswith("urn:counterweight:problem:")

    missing = get_job.sync("0" * 32, client=client)
    assert isinstance(missing, models.Problem)
    assert (missing.status, missing.detail) == (404, f"no job with id {'0' * 32!r}")
