"""GET /v1/jobs/{id}/logs and `counterweight logs ID --follow` with real processes: an API
and workers on separate homes (separate hosts but for the database file), sharing an
S3-compatible store (moto's server). The first worker is SIGKILLed mid-job; the logs
keep what it shipped as attempt 1, and the second worker's lines as attempt 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from tests.acceptance.conftest import SLOW_DIGITS
from tests.processes import Service
from tests.s3server import S3Server

SPEC = {**SLOW_DIGITS, "train": {**SLOW_DIGITS["train"], "epochs": 3}}


def follow(api: Service, job_id: str, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "counterweight.service.cli", "logs", job_id, "--follow"]
    return subprocess.Popen(
        [*command, "--url", api.url, *options],
        env=api.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_logs_of_every_attempt_come_from_the_store_and_follow_ends_with_the_job(
    database_url: str, store: S3Server, tmp_path: Path
) -> None:
    settings = {
        **store.settings(),
        "log_upload_seconds": "0.3",
        "lease_seconds": "3",
        "heartbeat_seconds": "0.5",
        "sweep_seconds": "0.5",
    }
    hosts = {name: Service(tmp_path / name, database_url, **settings) for name in ("api", "a", "b")}
    for host in hosts.values():
        host.home.mkdir()
    api = hosts["api"]
    followers: list[subprocess.Popen[str]] = []
    try:
        api.start_api()
        first = hosts["a"].start_worker()
        job_id = api.submit(SPEC)
        followed = follow(api, job_id)
        followed_json = follow(api, job_id, "--json")
        followers += [followed, followed_json]
        api.wait_for(job_id, lambda job: (job["progress"] or {}).get("epoch", 0) >= 1)
        # What worker A shipped before it dies, read back while the job runs: its first
        # epoch's line goes up within log_upload_seconds of the epoch's end.
        running = shipped_attempt(api, job_id, "epoch 1: train_loss")
        assert running["attempt"] == 1 and not running["complete"]
        assert any("attempt 1/3 started" in line for line in running["lines"])
        first.send_signal(signal.SIGKILL)
        first.wait()
        hosts["b"].start_worker()
        job = api.wait_until_ended(job_id, timeout=300)
        assert job["status"] == "succeeded", hosts["b"].logs()

        out, err = followed.communicate(timeout=60)
        assert followed.returncode == 0, err
        logs = api.http.get(f"/v1/jobs/{job_id}/logs").json()
        assert logs["status"] == "succeeded"
        killed, rerun = logs["attempts"]
        assert (killed["attempt"], killed["complete"]) == (1, False)
        assert (rerun["attempt"], rerun["complete"]) == (2, True)
        assert any("epoch 1: train_loss" in line for line in killed["lines"])
        assert any("resuming at epoch" in line for line in rerun["lines"])
        assert any(f"job={job_id} succeeded" in line for line in rerun["lines"])
        assert rerun["lines"][-1].endswith(f"job={job_id} attempt 2: end of log")
        # Only the job's own lines: none about the worker itself.
        assert not any(" worker " in line and "started on" in line for line in rerun["lines"])

        # --follow printed every line of both attempts, in order, then the end.
        expected = [
            "--- attempt 1",
            *killed["lines"],
            "--- attempt 2",
            *rerun["lines"],
            f"--- job {job_id} succeeded",
        ]
        assert out.splitlines() == expected
        json_out, _ = followed_json.communicate(timeout=60)
        events = [json.loads(line) for line in json_out.splitlines()]
        assert events[-1] == {"event": "end", "status": "succeeded"}
        assert [e["line"] for e in events if e.get("attempt") == 2] == rerun["lines"]

        # The API host never had a copy of the log: it read it from the store.
        logs_dir = Path("artifacts") / "jobs" / job_id / "logs"
        assert not (api.home / logs_dir).exists()
        stored = store.keys()
        assert {key.rsplit("/", 1)[-1] for key in stored if "/logs/" in key} == {
            "attempt-1.log",
            "attempt-2.log",
        }
        # A finished job's follow ends at once, with everything.
        again = follow(api, job_id)
        followers.append(again)
        out_again, _ = again.communicate(timeout=60)
        assert out_again.splitlines() == expected
    finally:
        for process in followers:  # a failed assertion must not leave their pipes open
            process.kill()
            process.communicate()
        for host in hosts.values():
            host.stop()


def shipped_attempt(api: Service, job_id: str, line: str) -> dict[str, Any]:
    """The job's one attempt as GET /v1/jobs/{id}/logs serves it, once it holds `line`."""
    deadline = time.monotonic() + 60
    while True:
        answer = api.http.get(f"/v1/jobs/{job_id}/logs")
        assert answer.status_code == 200, answer.text
        attempts = answer.json()["attempts"]
        if attempts and any(line in shipped for shipped in attempts[0]["lines"]):
            (attempt,) = attempts
            return cast(dict[str, Any], attempt)
        assert time.monotonic() < deadline, f"no {line!r} in {attempts}"
        time.sleep(0.1)


def test_logs_of_a_job_that_never_ran(database_url: str, tmp_path: Path) -> None:
    api = Service(tmp_path, database_url)
    try:
        api.start_api()
        job_id = api.submit(SPEC)
        assert api.http.get(f"/v1/jobs/{job_id}/logs").json()["attempts"] == []
        api.http.post(f"/v1/jobs/{job_id}/cancel")
        followed = follow(api, job_id)
        out, _ = followed.communicate(timeout=60)
        assert out.splitlines() == [f"--- job {job_id} cancelled"]
        assert followed.returncode == 1
        assert api.http.get(f"/v1/jobs/{'0' * 32}/logs").status_code == 404
    finally:
        api.stop()
