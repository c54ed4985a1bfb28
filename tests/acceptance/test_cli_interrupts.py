"""The CLI as a user at a terminal meets it: files it cannot use are one `error:` line and
exit 2; Ctrl-C (a real SIGINT) stops the command, not the job, says which job or sweep
goes on and how to cancel it, and exits 130; the servers stop quietly on Ctrl-C, even
while starting. Real CLI processes against a real API process (no worker: what is
submitted stays queued, as a long job would run)."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from tests.processes import Service

CLI = [sys.executable, "-m", "counterweight.service.cli"]
TINY: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
NOWHERE = "http://127.0.0.1:9"  # nothing listens: a file check must not need the server

BAD_FILES: list[tuple[str, str | bytes | None, str]] = [
    # (command, the file's content (None: no such file; "/": a directory), said on stderr)
    ("submit", None, "No such file"),
    ("submit", "/", "Is a directory"),
    ("submit", "{not json", "not valid JSON"),
    ("submit", b"\xff\xfe{}", "not UTF-8"),
    ("submit", "[1, 2]", "a job spec is a JSON object"),
    ("submit", "3", "not a number"),
    ("sweep", None, "No such file"),
    ("sweep", "{not json", "not valid JSON"),
    ("sweep", json.dumps([TINY]), "a sweep is a JSON object"),
    ("sweep", json.dumps({"grid": {"train.seed": [0]}}), 'no "base"'),
    ("sweep", json.dumps({"base": TINY}), 'no "grid"'),
    ("sweep", json.dumps({"base": [], "grid": {}}), '"base" is an array'),
    ("sweep", json.dumps({"base": TINY, "grid": {"train.seed": 0}}), 'grid["train.seed"]'),
    ("sweep", json.dumps({"base": TINY, "grid": {}, "grids": {}}), "unknown key(s) 'grids'"),
    ("datasets upload", None, "No such file"),
    ("datasets upload", "/", "Is a directory"),
]


@pytest.mark.parametrize(("command", "content", "said"), BAD_FILES)
def test_a_file_the_cli_cannot_use_is_an_error_line_and_exit_2(
    tmp_path: Path, command: str, content: str | bytes | None, said: str
) -> None:
    path = tmp_path / "input.json"
    if content == "/":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = subprocess.run(
        [*CLI, *command.split(), str(path), "--url", NOWHERE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {path}"), result.stderr
    assert said in result.stderr and result.stdout == ""


class Cli:
    """One CLI process: stdout read line by line as it comes, stderr to a file."""

    def __init__(self, service: Service, *args: str, name: str = "cli") -> None:
        self.stderr_path = service.home / f"{name}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*CLI, *args, "--url", service.url],
                env=service.env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        with stream:
            for line in stream:
                self.lines.put(line)
        self.lines.put("")  # end of output

    def line(self, timeout: float = 60) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"no output within {timeout} s; stderr: {self.stderr()}") from None

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def interrupt(self) -> int:
        """Ctrl-C; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(timeout=30)  # to the end of stdout, which it then closes

    def rest(self) -> str:
        out = []
        while line := self.line():
            out.append(line)
        return "".join(out)


def run_suggested(command: str, service: Service) -> subprocess.CompletedProcess[str]:
    """A command the CLI suggested, run as given (the suggestion names the --url)."""
    args = shlex.split(command)
    assert args[0] == "counterweight"
    return subprocess.run(
        [*CLI, *args[1:]], capture_output=True, text=True, timeout=60, env=service.env
    )


def suggested(stderr: str, verb: str) -> str:
    [line] = [line for line in stderr.splitlines() if f"counterweight {verb} " in line]
    return line[line.index("counterweight") :]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_during_submit_wait_names_the_job_it_leaves_running(
    service: Service, tmp_path: Path, as_json: bool
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    cli = Cli(service, "submit", str(spec), "--wait", *(["--json"] if as_json else []))
    first = cli.line()  # out as soon as the job exists, before the wait
    job_id = json.loads(first)["id"] if as_json else first.strip()
    assert service.job(job_id)["status"] == "queued"

    assert cli.interrupt() == 130
    stderr = cli.stderr()
    assert "Traceback" not in stderr, stderr
    assert f"job {job_id} goes on" in stderr
    assert cli.rest() == ""  # nothing more on stdout: with --json, the first line alone
    assert service.job(job_id)["status"] == "queued"  # the job itself was left alone

    cancel = suggested(stderr, "cancel")
    assert cancel == f"counterweight cancel {job_id} --url {service.url}"
    cancelled = run_suggested(cancel, service)
    assert cancelled.returncode == 0, cancelled.stderr
    assert service.job(job_id)["status"] == "cancelled"


def test_ctrl_c_during_wait_names_the_job_and_how_to_follow_it_again(
    service: Service,
) -> None:
    job_id = service.submit(TINY)
    cli = Cli(service, "wait", job_id)
    deadline = time.monotonic() + 60
    while "queued" not in cli.stderr():  # the progress bar: the wait has begun
        assert time.monotonic() < deadline and cli.proc.poll() is None, cli.stderr()
        time.sleep(0.05)

    assert cli.interrupt() == 130
    stderr = cli.stderr()
    assert "Traceback" not in stderr, stderr
    assert suggested(stderr, "wait") == f"counterweight wait {job_id} --url {service.url}"
    assert suggested(stderr, "cancel") == f"counterweight cancel {job_id} --url {service.url}"
    assert service.job(job_id)["status"] == "queued"


def test_ctrl_c_during_sweep_wait_names_the_sweep_and_its_jobs(
    service: Service, tmp_path: Path
) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"base": TINY, "grid": {"train.seed": [0, 1]}}))
    cli = Cli(service, "sweep", str(path), "--wait", "--json")
    sweep = json.loads(cli.line())
    assert len(sweep["job_ids"]) == 2

    assert cli.interrupt() == 130
    stderr = cli.stderr()
    assert "Traceback" not in stderr, stderr
    assert f"sweep {sweep['id']} goes on" in stderr
    assert all(job_id in stderr for job_id in sweep["job_ids"])
    assert "counterweight cancel JOB_ID" in stderr
    assert cli.rest() == ""


def wait_until_loaded(proc: subprocess.Popen[str], library: str) -> None:
    """Until `proc` has mapped `library`: it is past Python's own start, in our imports."""
    deadline = time.monotonic() + 60
    while library not in Path(f"/proc/{proc.pid}/maps").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, f"{library} never loaded"
        time.sleep(0.005)


# (arguments, a library its imports load early on; the imports take a second or more)
STARTING = {
    "worker": (["worker", "--device", "cpu"], "libtorch"),
    "api": (["api", "--port", "0"], "_pydantic_core"),
}


@pytest.mark.parametrize("program", sorted(STARTING))
def test_ctrl_c_stops_a_starting_server_quietly(tmp_path: Path, program: str) -> None:
    """Ctrl-C while a server is still starting, importing what it needs (torch, the
    app): no traceback. Exit 130 if it came before the server took Ctrl-C over, else 0,
    the server's own quiet stop (tests/acceptance/test_cli.py)."""
    env = {**os.environ, "COUNTERWEIGHT_HOME": str(tmp_path)}
    env.pop("COUNTERWEIGHT_DATABASE_URL", None)
    args, library = STARTING[program]
    server = subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until_loaded(server, library)
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert server.returncode in (0, 130), output
