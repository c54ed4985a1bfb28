"""The one-command run: `counterweight serve`, then `counterweight submit --wait`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from tests.conftest import ThreadedUvicorn
from tests.processes import free_port


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_serve_then_submit_and_wait_then_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "COUNTERWEIGHT_HOME": str(tmp_path / "home")}
    env.pop("COUNTERWEIGHT_DATABASE_URL", None)
    cli = [sys.executable, "-m", "counterweight.service.cli"]
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            [*cli, "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        assert (tmp_path / "home" / "counterweight.db").exists()  # SQLite under the home
        children = children_of(serve.pid)
        assert len(children) == 2  # the API and one worker

        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"dataset": {"name": "digits"}, "train": {"epochs": 3}}))
        submitted = subprocess.run(
            [*cli, "submit", str(spec), "--wait", "--url", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id, *table = submitted.stdout.strip().splitlines()
        assert len(job_id) == 32
        accuracy = next(line for line in table if line.startswith("accuracy "))
        assert float(accuracy.split()[-1]) > 0.8  # the final metrics table
        assert "epoch 3/3" in submitted.stderr  # the progress bar reached the end

        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
        assert not any(alive(child) for child in children)
    finally:
        if serve.poll() is None:
            serve.kill()


def test_submit_reports_a_bad_spec_clearly(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"dataset": {"name": "digits"}, "train": {"epochs": 0}}))
    app = create_app(Settings(home=tmp_path))
    with ThreadedUvicorn(app) as url:
        result = subprocess.run(
            [sys.executable, "-m", "counterweight.service.cli", "submit", str(spec), "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "422" in result.stderr and "train.epochs" in result.stderr


def test_submit_names_a_spec_file_it_cannot_read(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for spec in (broken, tmp_path / "missing.json"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "counterweight.service.cli",
                "submit",
                str(spec),
                "--url",
                "http://127.0.0.1:9",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
