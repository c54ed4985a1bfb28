"""`counterweight`: run the service, a worker, migrations, or submit a job."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from service.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = {"succeeded", "failed", "cancelled"}


def _settings() -> Settings:
    return Settings()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from service.db.engine import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    print(f"database at {settings.resolved_database_url} is up to date")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.worker import run_worker

    run_worker(_settings(), args.device)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The API plus N workers as child processes; Ctrl-C or SIGTERM stops them all."""
    from service.db.engine import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)  # once, before the children race to do it
    exe = [sys.executable, "-m", "service.cli"]
    api = [*exe, "api", "--host", args.host, "--port", str(args.port)]
    children = [subprocess.Popen(api)]
    for _ in range(args.workers):
        worker = [*exe, "worker", *(["--device", args.device] if args.device else [])]
        children.append(subprocess.Popen(worker))
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
    for child in children:
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(
        "service.api.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="info",
    )
    return 0


def _client(args: argparse.Namespace) -> httpx.Client:
    return httpx.Client(base_url=args.url, timeout=30)


def _check(response: httpx.Response) -> Any:
    if response.is_error:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise SystemExit(f"error {response.status_code}: {detail}")
    return response.json()


def cmd_submit(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    with _client(args) as client:
        job = _check(client.post("/v1/jobs", json=spec))
        print(job["id"], flush=True)
        if not args.wait:
            return 0
        job = _wait(client, job["id"])
        if job["status"] != "succeeded":
            print(f"job {job['id']} {job['status']}: {job.get('error') or ''}", file=sys.stderr)
            return 1
        metrics = _check(client.get(f"/v1/jobs/{job['id']}/metrics"))
    final = metrics["final"]
    print(
        json.dumps({k: final[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "g_mean")})
    )
    return 0


def _wait(client: httpx.Client, job_id: str) -> Any:
    """Poll until the job ends, drawing a progress bar on stderr."""
    with tqdm(total=1.0, unit="job", file=sys.stderr, bar_format="{l_bar}{bar}| {postfix}") as bar:
        while True:
            job = _check(client.get(f"/v1/jobs/{job_id}"))
            progress = job.get("progress") or {}
            bar.n = round(progress.get("fraction", 0.0), 3)
            bar.set_description(
                f"{job['status']} epoch {progress.get('epoch', 0)}/{progress.get('epochs', '?')}"
            )
            latest = progress.get("metrics") or {}
            eta = progress.get("eta_seconds")
            bar.set_postfix_str(
                " ".join(f"{k}={v:.3f}" for k, v in latest.items())
                + (f" eta={eta:.0f}s" if eta else "")
            )
            if job["status"] in TERMINAL:
                return job
            time.sleep(1.0)


def build_parser() -> argparse.ArgumentParser:
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
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run one worker")
    worker.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    worker.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply all migrations").set_defaults(func=cmd_db_upgrade)

    submit = sub.add_parser("submit", help="submit a job spec (JSON file)")
    submit.add_argument("spec")
    submit.add_argument("--wait", action="store_true", help="show progress until the job ends")
    submit.add_argument("--url", default=os.environ.get("COUNTERWEIGHT_URL", DEFAULT_URL))
    submit.set_defaults(func=cmd_submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("COUNTERWEIGHT_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
