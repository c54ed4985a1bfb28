"""Chaos on the file system: the home fails while clients submit jobs and upload datasets.

The home (SQLite file, uploads) is an ext4 image, loop-mounted with
errors=remount-ro (tests.loopfs; root only). Client threads submit jobs and upload
small `.npz` files in a loop, noting every 2xx answer. After `before` seconds the
file system fails: an ext4 error turns it read-only at once and aborts its journal,
so what was only in the page cache never reaches the disk, as in a crash. The
clients go on for `during` seconds (every answer should be a 503, none a 500), and
/readyz and counterweight_database_up are read. Then the API is SIGKILLed, the file
system unmounted, checked (e2fsck) and mounted again, the API started again, and
every job and upload answered 2xx is looked up, each upload's bytes compared.

    .venv/bin/python -m bench.chaos --fault filesystem [--synchronous full|normal|both]
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from tests.loopfs import Ext4Image
from tests.processes import Service

JOB = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
UPLOAD_EVERY = 4  # one request in four is an upload


def upload_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.random((64, 8)).astype(np.float32),
        y_train=np.arange(64) % 2,
        x_test=rng.random((16, 8)).astype(np.float32),
        y_test=np.arange(16) % 2,
    )
    return buffer.getvalue()


@dataclass
class FilesystemReport:
    synchronous: str
    clients: int
    jobs_accepted: int = 0  # answered 202
    uploads_accepted: int = 0  # answered 201
    answers_during_fault: dict[str, int] = field(default_factory=dict)  # status -> count
    server_errors: int = 0  # 500s, at any time: should be none
    ready_during_fault: int = 0  # /readyz's status while the file system was read-only
    database_up_during_fault: float | None = None
    jobs_missing: int = 0  # answered 202, not there after the restart: should be none
    uploads_missing: int = 0  # answered 201, row or file not there after the restart
    uploads_altered: int = 0  # there, but not the bytes that were sent
    wall_seconds: float = 0.0


class Clients:
    """Threads that submit and upload until stopped, noting each answer and when."""

    def __init__(self, url: str, count: int, data: bytes) -> None:
        self.url = url
        self.data = data
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # (time answered, kind, status, id of what was accepted or None)
        self.answers: list[tuple[float, str, int, str | None]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            sent = index
            while not self.stop.is_set():
                sent += 1
                kind = "upload" if sent % UPLOAD_EVERY == 0 else "job"
                try:
                    if kind == "upload":
                        files = {"file": ("data.npz", self.data, "application/octet-stream")}
                        response = http.post("/v1/datasets", files=files)
                    else:
                        response = http.post("/v1/jobs", json=JOB)
                except httpx.TransportError:
                    status, accepted = 0, None
                else:
                    status = response.status_code
                    accepted = response.json()["id"] if status in (201, 202) else None
                with self.lock:
                    self.answers.append((time.monotonic(), kind, status, accepted))


def _database_up(http: httpx.Client) -> float | None:
    found = re.search(r"^counterweight_database_up (\S+)$", http.get("/metrics").text, re.M)
    return float(found.group(1)) if found else None


def run_filesystem_fault(
    *, synchronous: str = "full", clients: int = 4, before: float = 6.0, during: float = 3.0
) -> FilesystemReport:
    report = FilesystemReport(synchronous=synchronous, clients=clients)
    root = Path(tempfile.mkdtemp(prefix="cw-fs-chaos-"))
    image = Ext4Image(root)
    started = time.monotonic()
    data = upload_bytes()
    home = image.mount() / "home"
    try:
        logs = root / "logs"
        logs.mkdir()
        # Logs beside the image, not on the file system that fails.
        service = Service(logs, f"sqlite:///{home / 'counterweight.db'}")
        service.env["COUNTERWEIGHT_HOME"] = str(home)
        service.env["COUNTERWEIGHT_SQLITE_SYNCHRONOUS"] = synchronous
        # Thousands of jobs queued in seconds, no worker: no 429s for the tenant's cap.
        service.env["COUNTERWEIGHT_MAX_QUEUED_JOBS_PER_TENANT"] = str(10**6)
        try:
            service.start_api()
            writers = Clients(service.url, clients, data)
            writers.start()
            time.sleep(before)
            image.fail()
            failed_at = time.monotonic()
            time.sleep(during)
            report.ready_during_fault = service.http.get("/readyz").status_code
            report.database_up_during_fault = _database_up(service.http)
            writers.join()
            _tally(report, writers.answers, failed_at)
            api = service.processes.pop()
            api.send_signal(signal.SIGKILL)
            api.wait()
            home = image.recover() / "home"
            service.start_api()
            _check(report, service.http, writers.answers, home, data)
        finally:
            service.stop()
            image.unmount()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.wall_seconds = round(time.monotonic() - started, 1)
    return report


def _tally(
    report: FilesystemReport, answers: list[tuple[float, str, int, str | None]], failed_at: float
) -> None:
    during: Counter[str] = Counter()
    for when, kind, status, _ in answers:
        report.jobs_accepted += int(kind == "job" and status == 202)
        report.uploads_accepted += int(kind == "upload" and status == 201)
        report.server_errors += int(status >= 500 and status != 503)
        if when > failed_at:
            during[str(status)] += 1
    report.answers_during_fault = dict(sorted(during.items()))


def _check(
    report: FilesystemReport,
    http: httpx.Client,
    answers: list[tuple[float, str, int, str | None]],
    home: Path,
    data: bytes,
) -> None:
    sent = hashlib.sha256(data).digest()
    for _, kind, _, accepted in answers:
        if accepted is None:
            continue
        if kind == "job":
            report.jobs_missing += http.get(f"/v1/jobs/{accepted}").status_code != 200
            continue
        stored = home / "datasets" / f"{accepted}.npz"
        if http.get(f"/v1/datasets/{accepted}").status_code != 200 or not stored.is_file():
            report.uploads_missing += 1
        elif hashlib.sha256(stored.read_bytes()).digest() != sent:
            report.uploads_altered += 1
