"""The client commands of `counterweight`: submit, status, wait, metrics, download,
cancel, sweep and datasets, built on counterweight_client.

Human-readable output on stdout, the progress bar on stderr; `--json` prints only JSON
on stdout. An error prints the server's message on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from counterweight_client import Client, CounterweightError, Job, JobEvent
from counterweight_client._core import DEFAULT_URL

SWEEP_POLL_SECONDS = 2.0
Command = Callable[[Client, argparse.Namespace], int]


def _emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _output(args: argparse.Namespace, value: Any, text: str) -> None:
    """`value` as JSON with --json, else the readable `text`."""
    if args.json:
        _emit_json(value)
    else:
        print(text)


class ProgressBar:
    """A tqdm bar over the job's epochs, fed by `Client.wait`'s events."""

    def __init__(self) -> None:
        self.bar = tqdm(
            total=1.0, file=sys.stderr, bar_format="{desc} |{bar}| {percentage:3.0f}% {postfix}"
        )
        self.bar.set_description_str("queued")

    def __call__(self, event: JobEvent) -> None:
        if event.type == "status":
            self.bar.set_description_str(str(event.data.get("status")))
        elif event.type == "progress":
            self._show(event.data)

    def _show(self, progress: dict[str, Any]) -> None:
        metrics = progress.get("metrics") or {}
        parts = [f"epoch {progress.get('epoch', 0)}/{progress.get('epochs', '?')}"]
        if "train_loss" in metrics:
            parts.append(f"loss {metrics['train_loss']:.4f}")
        if "val_balanced_accuracy" in metrics:
            parts.append(f"val bal acc {metrics['val_balanced_accuracy']:.3f}")
        eta = progress.get("eta_seconds")
        if eta is not None:
            parts.append(f"ETA {eta:.0f}s")
        self.bar.set_description_str("running")
        self.bar.set_postfix_str(", ".join(parts))
        self.bar.n = round(float(progress.get("fraction", 0.0)), 4)
        self.bar.refresh()

    def finish(self, job: Job) -> None:
        if job.progress is not None:
            self._show(job.raw["progress"])
        self.bar.set_description_str(job.status)
        self.bar.close()


def metrics_table(metrics: dict[str, Any]) -> str:
    """Per-class precision, recall, F1 and support, then the summary metrics."""
    final = metrics["final"]
    rows = [("class", "name", "precision", "recall", "f1", "support")]
    for row in final.get("per_class", []):
        rows.append(
            (
                str(row["class"]),
                str(row.get("name", "")),
                f"{row['precision']:.3f}",
                f"{row['recall']:.3f}",
                f"{row['f1']:.3f}",
                str(row["support"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    summary = [
        ("accuracy", final.get("accuracy")),
        ("balanced accuracy", final.get("balanced_accuracy")),
        ("macro F1", final.get("macro_f1")),
        ("G-mean", final.get("g_mean")),
        ("PR-AUC (minority)", final.get("pr_auc_minority")),
    ]
    lines.append("")
    lines += [f"{name:<18} {value:.4f}" for name, value in summary if value is not None]
    if "selected_epoch" in metrics:
        lines.append(f"{'selected epoch':<18} {metrics['selected_epoch']}")
    return "\n".join(line.rstrip() for line in lines)


def _job_line(job: Job) -> str:
    line = f"{job.id}  {job.status}  attempt {job.attempt}/{job.max_attempts}"
    if job.progress is not None:
        line += f"  epoch {job.progress.epoch}/{job.progress.epochs}"
    line += f"\nwaiting: {job.waiting}" if job.waiting else ""
    return line + (f"\nerror: {job.error}" if job.error else "")


def _wait_and_report(client: Client, job_id: str, as_json: bool) -> int:
    """Wait (with a bar unless --json), then the final metrics; 1 if the job did not succeed."""
    bar = None if as_json else ProgressBar()
    job = client.wait(job_id, on_progress=bar)
    if bar is not None:
        bar.finish(job)
    metrics = client.metrics(job_id) if job.status == "succeeded" else None
    if as_json:
        _emit_json({"job": job.raw, "metrics": metrics})
    elif metrics is not None:
        print(metrics_table(metrics))
    if job.status != "succeeded":
        print(f"job {job.id} {job.status}: {job.error or ''}", file=sys.stderr)
        return 1
    return 0


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    job = client.submit(json.loads(Path(args.spec).read_text()))
    if not args.json:
        print(job.id, flush=True)
    if args.wait:
        return _wait_and_report(client, job.id, args.json)
    if args.json:
        _emit_json(job.raw)
    return 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.id)
    _output(args, job.raw, _job_line(job))
    return 0


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    return _wait_and_report(client, args.id, args.json)


def cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    metrics = client.metrics(args.id)
    _output(args, metrics, metrics_table(metrics))
    return 0


def cmd_download(client: Client, args: argparse.Namespace) -> int:
    path = client.download_model(args.id, args.output or f"{args.id}.safetensors")
    _output(args, {"path": str(path)}, str(path))
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.id)
    _output(args, job.raw, _job_line(job))
    return 0


def cmd_sweep(client: Client, args: argparse.Namespace) -> int:
    body = json.loads(Path(args.spec).read_text())
    sweep = client.sweep(body["base"], body["grid"])
    if not args.json:
        print(f"{sweep.id}  {len(sweep.job_ids)} jobs", flush=True)
    while args.wait and not sweep.done:
        time.sleep(SWEEP_POLL_SECONDS)
        sweep = client.get_sweep(sweep.id)
    if args.json:
        _emit_json(sweep.raw)
    elif args.wait:
        print(f"sweep {sweep.id} {sweep.status}")
        for row in sweep.table:
            print(json.dumps(row))
    return 0


def cmd_datasets(client: Client, args: argparse.Namespace) -> int:
    if args.datasets_command == "upload":
        uploaded = client.upload_dataset(args.file)
        _output(args, uploaded, uploaded["id"])
        return 0
    datasets = client.datasets()
    if args.json:
        _emit_json(datasets)
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
        except (OSError, json.JSONDecodeError) as error:
            # A spec file that is missing or not JSON: say so, without a traceback.
            print(f"error: {error}", file=sys.stderr)
            return 2

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
    sweep = add("sweep", cmd_sweep, 'submit a sweep: a JSON file {"base": spec, "grid": {...}}')
    sweep.add_argument("spec")
    sweep.add_argument("--wait", action="store_true", help="poll until every job has ended")
    datasets = add("datasets", cmd_datasets, "list datasets, or `datasets upload FILE`")
    datasets.set_defaults(datasets_command=None)
    datasets_sub = datasets.add_subparsers(dest="datasets_command")
    upload = datasets_sub.add_parser("upload", help="upload an .npz", parents=[nested])
    upload.add_argument("file")
