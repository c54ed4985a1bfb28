"""`counterweight`: run the service, a worker or migrations. The client commands
(submit, status, wait, ...) are in service.cli.client, the key commands in
service.cli.keys."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from counterweight.service.cli import INTERRUPTED
from counterweight.service.errors import DatabaseUnavailable
from counterweight.service.logs import configure_logging

if TYPE_CHECKING:
    from counterweight.service.settings import Settings

# Everything else is imported where used, inside main(): a Ctrl-C during those imports
# (they take a while) then exits quietly, as one later does.

# The worker is a program of its own (workers/__main__.py): it needs torch, which nothing
# else here loads, and nothing in service/ imports the worker's code.
WORKER_MODULE = "counterweight.workers"


def _settings() -> Settings:
    from counterweight.service.settings import Settings

    return Settings()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from counterweight.service.store.engine import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    print(f"database at {settings.resolved_database_url} is up to date")
    return 0


def worker_command(device: str | None) -> list[str]:
    return [sys.executable, "-m", WORKER_MODULE, *(["--device", device] if device else [])]


def cmd_worker(args: argparse.Namespace) -> int:
    """Become the worker program: the same process, so signals reach the worker itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    command = worker_command(args.device)
    os.execv(command[0], command)


def cmd_serve(args: argparse.Namespace) -> int:
    """The API plus N workers as child processes; Ctrl-C or SIGTERM stops them all (the
    workers checkpoint and re-queue their jobs first); a second Ctrl-C kills them."""
    from counterweight.service.cli import keys
    from counterweight.service.store.engine import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)  # once, before the children race to do it
    if keys.refuse_open_mode(settings, args.host, warn=False):  # the API child warns
        return 2
    api = [
        sys.executable,
        "-m",
        "counterweight.service.cli",
        "api",
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    children = [subprocess.Popen(api)]
    for _ in range(args.workers):
        children.append(subprocess.Popen(worker_command(args.device)))
    print(
        f"counterweight: API on http://{args.host}:{args.port} (docs at /docs), "
        f"{args.workers} worker(s), database {settings.resolved_database_url}",
        flush=True,
    )

    def _forward(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _forward)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("counterweight: a child process exited; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    try:
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, not after the checkpoints
        for child in children:
            child.kill()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from counterweight.service.cli import keys
    from counterweight.service.store.engine import upgrade

    settings = _settings()
    if keys.refuse_open_mode(settings, args.host):
        return 2
    upgrade(settings.resolved_database_url)  # once, before N processes start
    with shared_metrics_dir(args.processes):
        uvicorn.run(
            "counterweight.service.api.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.processes,
            log_level="info",
            log_config=None,  # uvicorn's lines go through our handler (service.logs)
        )
    return 0


@contextmanager
def shared_metrics_dir(processes: int) -> Iterator[None]:
    """With several API processes, a fresh directory where each keeps its HTTP latency
    for GET /metrics to sum (service.api.metrics); one given by the operator is kept."""
    from counterweight.service.api.metrics import MULTIPROCESS_DIR

    if processes == 1 or os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="counterweight-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR] = directory  # the processes, spawned, inherit it
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]


def build_parser() -> argparse.ArgumentParser:
    from counterweight.service.cli import client, keys

    parser = argparse.ArgumentParser(prog="counterweight", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API and N workers")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--device", default=None, help="device for the workers (cpu, cuda, cuda:N)")
    serve.set_defaults(func=cmd_serve)

    api = sub.add_parser("api", help="run the API alone")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument(
        "--processes", type=int, default=1, help="API processes sharing the port (one per core)"
    )
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run one worker")
    worker.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    worker.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply all migrations").set_defaults(func=cmd_db_upgrade)

    keys.add_commands(sub)
    client.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C while starting up (a running server stops on it by itself, and the
        # client commands say what goes on): quietly, with the shell's code for it.
        return INTERRUPTED


def _main(argv: list[str] | None) -> int:
    try:
        configure_logging()  # COUNTERWEIGHT_LOG_LEVEL, COUNTERWEIGHT_LOG_FORMAT (text | json)
    except ValueError as exc:
        print(f"counterweight: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except DatabaseUnavailable as exc:  # e.g. the SQLite file missing at start-up
        print(f"counterweight: {exc}", file=sys.stderr)
        return 2
    return code
