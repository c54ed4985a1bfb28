"""The client commands of `counterweight`: submit, status, wait, metrics, download,
cancel, delete, logs, sweep and datasets, built on counterweight_client.

Human-readable output on stdout, the progress bar on stderr; `--json` prints only JSON
on stdout (`--wait` makes it two JSON lines: what was created, at once, then the end).
An error prints the server's message on stderr and exits 1; a file that cannot be used
says why on stderr and exits 2. Ctrl-C exits 130, saying what goes on on the server
(a job or sweep keeps running) and how to follow or cancel it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from counterweight.service.cli import INTERRUPTED
from counterweight.service.cli.display import (
    ProgressBar,
    emit_json,
    emit_json_line,
    job_line,
    metrics_table,
    output,
)
from counterweight_client import Client, CounterweightError, Sweep
from counterweight_client._core import DEFAULT_URL, resolve_base_url

SWEEP_POLL_SECONDS = 2.0
Command = Callable[[Client, argparse.Namespace], int]


class BadFile(Exception):
    """A file given on the command line that cannot be used: `error: ...`, exit 2."""


class Interrupted(Exception):
    """Ctrl-C; the message says what goes on on the server and how to reach it."""


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}


def _kind(value: Any) -> str:
    return "null" if value is None else _JSON_KINDS.get(type(value), "a number")


def read_json(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:  # missing, a directory, no permission
        raise BadFile(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise BadFile(f"{path}: not a JSON file (not UTF-8 text)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise BadFile(f"{path}: not valid JSON: {error.msg} at {where}") from None


def readable(path: str) -> str:
    """`path`, once it is known to be a file this process can read."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise BadFile(f"{path}: {error.strerror or error}") from None
    return path


def read_job_spec(path: str) -> dict[str, Any]:
    spec = read_json(path)
    if not isinstance(spec, dict):
        raise BadFile(f"{path}: a job spec is a JSON object {{...}}, not {_kind(spec)}")
    return spec


SWEEP_FILE = '{"base": {job spec}, "grid": {"dotted.path": [values, ...]}}'


def read_sweep(path: str) -> tuple[dict[str, Any], dict[str, Sequence[Any]]]:
    """The base spec and grid of a sweep file, checked enough to send."""
    body = read_json(path)
    if not isinstance(body, dict):
        raise BadFile(f"{path}: a sweep is a JSON object {SWEEP_FILE}, not {_kind(body)}")
    unknown = sorted(set(body) - {"base", "grid"})
    if unknown:
        raise BadFile(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; {SWEEP_FILE}")
    for key in ("base", "grid"):
        if key not in body:
            raise BadFile(f'{path}: no "{key}"; a sweep is {SWEEP_FILE}')
        if not isinstance(body[key], dict):
            raise BadFile(f'{path}: "{key}" is {_kind(body[key])}; expected an object')
    for field, values in body["grid"].items():
        if not isinstance(values, list):
            raise BadFile(f'{path}: grid["{field}"] is {_kind(values)}; expected an array')
    return body["base"], body["grid"]


def _url_option(args: argparse.Namespace) -> str:
    """` --url URL` when the command was pointed elsewhere than the default, so that a
    suggested command reaches the same server."""
    url = args.url.rstrip("/")
    return "" if url == resolve_base_url(None) else f" --url {url}"


@contextmanager
def job_goes_on(job_id: str, args: argparse.Namespace) -> Iterator[None]:
    """Ctrl-C in here ends the command, not the job: say so, and how to reach it."""
    try:
        yield
    except KeyboardInterrupt:
        url = _url_option(args)
        raise Interrupted(
            f"interrupted: job {job_id} goes on on the server (Ctrl-C stopped only this "
            f"command)\nfollow it: counterweight wait {job_id}{url}\n"
            f"cancel it: counterweight cancel {job_id}{url}"
        ) from None


@contextmanager
def maybe_created(what: str) -> Iterator[None]:
    """Ctrl-C before the server answered a create: it may have been created or not."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted before the server answered: the {what} may have been created; "
            "GET /v1/jobs lists the jobs"
        ) from None


def _wait_and_report(
    client: Client, job_id: str, args: argparse.Namespace, emit: Callable[[Any], None]
) -> int:
    """Wait (with a bar unless --json), then the final metrics (with --json, `emit`s
    {"job", "metrics"}); 1 if the job did not succeed. Ctrl-C: Interrupted."""
    with job_goes_on(job_id, args):
        bar = None if args.json else ProgressBar()
        try:
            job = client.wait(job_id, on_progress=bar)
        except BaseException:  # Ctrl-C, a lost server: the message goes below the bar
            if bar is not None:
                bar.close()
            raise
    if bar is not None:
        bar.finish(job)
    metrics = client.metrics(job_id) if job.status == "succeeded" else None
    if args.json:
        emit({"job": job.raw, "metrics": metrics})
    elif metrics is not None:
        print(metrics_table(metrics))
    if job.status != "succeeded":
        print(f"job {job.id} {job.status}: {job.error or ''}", file=sys.stderr)
        return 1
    return 0


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    spec = read_job_spec(args.spec)
    with maybe_created("job"):
        job = client.submit(spec)
    with job_goes_on(job.id, args):
        # Out before the wait: Ctrl-C must not lose the job's id, with --json too.
        if not args.json:
            print(job.id, flush=True)
        elif args.wait:
            emit_json_line(job.raw)
        if args.wait:
            return _wait_and_report(client, job.id, args, emit_json_line)
    if args.json:
        emit_json(job.raw)
    return 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.id)
    output(args, job.raw, job_line(job))
    return 0


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    return _wait_and_report(client, args.id, args, emit_json)


def cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    metrics = client.metrics(args.id)
    output(args, metrics, metrics_table(metrics))
    return 0


def cmd_download(client: Client, args: argparse.Namespace) -> int:
    path = client.download_model(args.id, args.output or f"{args.id}.safetensors")
    output(args, {"path": str(path)}, str(path))
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.id)
    outcome = job.raw.get("outcome")  # what the cancel does (DESIGN.md section 2)
    output(args, job.raw, job_line(job) + (f"\n{outcome}" if outcome else ""))
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    deleted = client.delete(args.id)
    files = "files removed" if deleted["files"] == "removed" else "files removed once it has ended"
    output(args, deleted, f"{deleted['id']}  deleted ({deleted['status']}); {files}")
    return 0


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    """Every attempt's lines; --follow: as they come, until the job ends (exit 1 if it
    did not succeed). With --json, one JSON object a line."""
    if not args.follow:
        logs = client.logs(args.id)
        if args.json:
            emit_json(logs)
            return 0
        for attempt in logs["attempts"]:
            print(f"--- attempt {attempt['attempt']}", flush=True)
            for line in attempt["lines"]:
                print(line)
        return 0
    with job_goes_on(args.id, args):
        shown = 0  # the attempt whose header was printed
        for event in client.follow_logs(args.id):
            if args.json:
                emit_json_line({"event": event.type, **event.data})
            elif event.type == "line":
                if event.data["attempt"] != shown:
                    shown = event.data["attempt"]
                    print(f"--- attempt {shown}")
                print(event.data["line"], flush=True)
            elif event.type == "end":
                if not args.json:
                    print(f"--- job {args.id} {event.data['status']}", flush=True)
                return 0 if event.data["status"] == "succeeded" else 1
    return 1  # the stream ended without the job's end: the server went away


def cmd_sweep(client: Client, args: argparse.Namespace) -> int:
    base, grid = read_sweep(args.spec)
    with maybe_created("sweep"):
        sweep = client.sweep(base, grid)
    if not args.wait:
        output(args, sweep.raw, f"{sweep.id}  {len(sweep.job_ids)} jobs")
        return 0
    try:
        # Out before the wait, as for a job: Ctrl-C must not lose the sweep's id.
        if args.json:
            emit_json_line(sweep.raw)
        else:
            print(f"{sweep.id}  {len(sweep.job_ids)} jobs", flush=True)
        while not sweep.done:
            time.sleep(SWEEP_POLL_SECONDS)
            sweep = client.get_sweep(sweep.id)
    except KeyboardInterrupt:
        raise Interrupted(_sweep_goes_on(sweep, args)) from None
    if args.json:
        emit_json_line(sweep.raw)
        return 0
    print(f"sweep {sweep.id} {sweep.status}")
    for row in sweep.table:
        print(json.dumps(row))
    return 0


def _sweep_goes_on(sweep: Sweep, args: argparse.Namespace) -> str:
    ended = sweep.raw.get("progress", {}).get("ended", "?")
    return (
        f"interrupted: sweep {sweep.id} goes on on the server ({ended} of "
        f"{len(sweep.job_ids)} jobs ended when last read); its jobs: {' '.join(sweep.job_ids)}"
        f"\ncancel one: counterweight cancel JOB_ID{_url_option(args)}"
    )


def cmd_datasets(client: Client, args: argparse.Namespace) -> int:
    if args.datasets_command == "upload":
        uploaded = client.upload_dataset(readable(args.file))
        output(args, uploaded, uploaded["id"])
        return 0
    datasets = client.datasets()
    if args.json:
        emit_json(datasets)
        return 0
    for row in datasets:
        available = "available" if row.get("available") else "missing"
        print(f"{row['id']:<34} {row.get('source', ''):<9} {row.get('kind', ''):<13} {available}")
    return 0


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            with Client(args.url, args.api_key) as client:
                return command(client, args)
        except CounterweightError as error:
            status = f" {error.status}" if error.status is not None else ""
            print(f"error{status}: {error.detail}", file=sys.stderr)
            return 1
        except BadFile as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except OSError as error:  # e.g. the model download cannot write its file
            print(f"error: {error}", file=sys.stderr)
            return 2
        except Interrupted as interrupted:
            print(interrupted, file=sys.stderr)
            return INTERRUPTED
        except KeyboardInterrupt:  # a command that left nothing going on
            print("interrupted", file=sys.stderr)
            return INTERRUPTED

    return run


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the client commands on the `counterweight` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("COUNTERWEIGHT_URL", DEFAULT_URL),
        help="the API (default: $COUNTERWEIGHT_URL or %(default)s); key: $COUNTERWEIGHT_API_KEY",
    )
    common.add_argument(
        "--api-key", default=None, help="the API key (default: $COUNTERWEIGHT_API_KEY)"
    )
    common.add_argument("--json", action="store_true", help="print only JSON on stdout")
    # `datasets upload` takes the options too; SUPPRESS keeps argparse's nested-parser
    # defaults from overwriting options given before `upload`.
    nested = argparse.ArgumentParser(add_help=False)
    nested.add_argument("--url", default=argparse.SUPPRESS)
    nested.add_argument("--api-key", default=argparse.SUPPRESS)
    nested.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    def add(name: str, command: Command, help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help, parents=[common])
        parser.set_defaults(func=_run(command))
        return parser

    submit = add("submit", cmd_submit, "submit a job spec (JSON file)")
    submit.add_argument("spec")
    submit.add_argument("--wait", action="store_true", help="show progress until the job ends")
    add("status", cmd_status, "a job's status and progress").add_argument("id")
    add("wait", cmd_wait, "show progress until a job ends, then its metrics").add_argument("id")
    add("metrics", cmd_metrics, "a finished job's per-class metrics").add_argument("id")
    download = add("download", cmd_download, "download a job's model (safetensors)")
    download.add_argument("id")
    download.add_argument("-o", "--output", help="file or folder (default: ID.safetensors)")
    add("cancel", cmd_cancel, "cancel a job").add_argument("id")
    add(
        "delete", cmd_delete, "delete a job: cancel it if it runs, hide it, remove its files"
    ).add_argument("id")
    logs = add("logs", cmd_logs, "a job's worker log lines, every attempt")
    logs.add_argument("id")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="print lines as they come, until the job ends"
    )
    sweep = add("sweep", cmd_sweep, 'submit a sweep: a JSON file {"base": spec, "grid": {...}}')
    sweep.add_argument("spec")
    sweep.add_argument("--wait", action="store_true", help="poll until every job has ended")
    datasets = add("datasets", cmd_datasets, "list datasets, or `datasets upload FILE`")
    datasets.set_defaults(datasets_command=None)
    datasets_sub = datasets.add_subparsers(dest="datasets_command")
    upload = datasets_sub.add_parser("upload", help="upload an .npz", parents=[nested])
    upload.add_argument("file")
