"""A real S3-compatible server for tests: moto's server mode, in its own process.

Not an in-process mock: boto3 talks HTTP to it on a free loopback port, as it
would to MinIO or AWS.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.processes import free_port

BUCKET = "counterweight-test"
# moto's server with the bucket made before it listens: a client that reaches a
# restarted server first must never hear "no such bucket" (a real server keeps it).
_LAUNCH = (
    "import sys; from moto.core import DEFAULT_ACCOUNT_ID; from moto.s3.models import "
    "s3_backends; s3_backends[DEFAULT_ACCOUNT_ID]['aws'].create_bucket(sys.argv[1], "
    "'us-east-1'); from moto.server import main; main(sys.argv[2:])"
)


class S3Server:
    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = logdir / "moto-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> S3Server:
        self._start()
        return self

    def _start(self) -> None:
        command = [sys.executable, "-c", _LAUNCH, BUCKET, "-H", "127.0.0.1", "-p", str(self.port)]
        with self._log.open("ab") as output:  # appended to: a restart keeps the first's
            self._proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self._proc.poll() is None, self._log.read_text()
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    log = self._log.read_text()
                    raise AssertionError(f"moto server did not start\n{log}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self.resume()  # a stopped server cannot act on SIGTERM
        self._proc.terminate()
        self._proc.wait(timeout=10)

    # Faults. moto keeps every object in its process's memory: a killed server comes
    # back with an empty bucket. A stopped one (SIGSTOP) still accepts connections, in
    # the kernel's backlog, and answers nothing until it is resumed.

    def kill(self) -> None:
        """The server is gone: connections to its port are refused."""
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait(timeout=10)

    def restart(self) -> None:
        """A new server on the same port, with the bucket (empty) there again."""
        self._start()

    def pause(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def settings(self) -> dict[str, str]:
        """Settings fields (lower case, no prefix) that point a process at this server."""
        return {
            "storage": "s3",
            "s3_bucket": BUCKET,
            "s3_prefix": "cw/",
            "s3_endpoint_url": self.url,
            "s3_region": "us-east-1",
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
        }

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def keys(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=BUCKET)
        return sorted(item["Key"] for item in listed.get("Contents", []))
