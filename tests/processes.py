"""Real processes for acceptance tests and benchmarks: the API under uvicorn and workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """An API process and any number of worker processes sharing one database."""

    def __init__(self, home: Path, database_url: str, **settings: str) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "COUNTERWEIGHT_HOME": str(home),
            "COUNTERWEIGHT_DATABASE_URL": database_url,
            "PYTHONUNBUFFERED": "1",
            **{f"COUNTERWEIGHT_{name.upper()}": value for name, value in settings.items()},
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "counterweight.service.cli", *args]
        with (self.home / f"{name}-{len(self.processes)}.log").open("wb") as log:
            proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def start_api(self, processes: int = 1) -> None:
        proc = self._spawn("api", "api", "--port", str(self.port), "--processes", str(processes))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, self.logs()
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"API did not start\n{self.logs()}")

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self._spawn("worker", "worker", "--device", "cpu")

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.http.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"/v1/jobs/{job_id}").json()
        return body

    def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 180
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if done(job):
                return job
            time.sleep(0.05)
        raise AssertionError(f"timed out; job is {self.job(job_id)}\n{self.logs()}")

    def wait_until_ended(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        return self.wait_for(job_id, lambda job: job["status"] in TERMINAL, timeout)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in self.home.glob("*.log"))

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.http.close()
