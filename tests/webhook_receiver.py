"""A webhook receiver on 127.0.0.1 for tests: a real HTTP server on a thread that checks
each delivery's signature as a user's receiver would, and can refuse or hold deliveries."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from counterweight.service.webhooks.signing import SIGNATURE_HEADER, verify


@dataclass
class Received:
    path: str
    delivery_id: str
    body: dict[str, Any]
    signed: bool  # the signature verified with the receiver's secret for this path
    answered: int


class Receiver:
    """Answers the first `fail_first` requests to each path with 500, then 200 (or
    `status`). `hold_next()` makes the next request wait until `release()`, unanswered:
    a delivery in flight, for a kill."""

    def __init__(self, *, fail_first: int = 0, status: int = 200, headers: Any = None) -> None:
        self.secrets: dict[str, str] = {}  # path -> secret
        self.received: list[Received] = []
        self.fail_first = fail_first
        self._failed: dict[str, int] = {}
        self.status = status
        self.headers: dict[str, str] = headers or {}
        self.holding = threading.Event()  # a request is being held
        self._release = threading.Event()
        self._hold_next = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def hold_next(self) -> None:
        self._hold_next = True

    def release(self) -> None:
        self._release.set()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        raw = request.rfile.read(int(request.headers.get("Content-Length", "0")))
        with self._lock:
            hold, self._hold_next = self._hold_next, False
        if hold:
            self.holding.set()
            self._release.wait(60)
            return  # no answer: the sender is gone, or gives up
        secret = self.secrets.get(request.path, "")
        signed = verify(secret, request.headers.get(SIGNATURE_HEADER, ""), raw)
        with self._lock:
            failed = self._failed.get(request.path, 0)
            status = 500 if failed < self.fail_first else self.status
            self._failed[request.path] = failed + 1
            self.received.append(
                Received(
                    request.path,
                    request.headers.get("Counterweight-Delivery", ""),
                    json.loads(raw),
                    signed,
                    status,
                )
            )
        request.send_response(status)
        for name, value in self.headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", "2")
        request.end_headers()
        request.wfile.write(b"ok")

    def accepted(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.answered == 200 and path in (None, r.path)]

    def wait_for(self, predicate: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {self.received}")
            time.sleep(0.05)


def first_arrivals(received: list[Received]) -> list[tuple[str, int]]:
    """(event, seq) of each delivery in the order it first arrived (retries dropped)."""
    seen: set[str] = set()
    order = []
    for item in received:
        if item.delivery_id not in seen:
            seen.add(item.delivery_id)
            order.append((item.body["event"], item.body["seq"]))
    return order
