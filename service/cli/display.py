"""What the client commands print: JSON, the progress bar, the metrics table, a job's
line. Human-readable text on stdout, the bar on stderr; with --json, JSON alone on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tqdm import tqdm

from counterweight_client import Job, JobEvent


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def emit_json_line(value: Any) -> None:
    """One JSON document on one line, flushed: a reader of a pipe gets it now."""
    print(json.dumps(value), flush=True)


def output(args: argparse.Namespace, value: Any, text: str) -> None:
    """`value` as JSON with --json, else the readable `text`."""
    if args.json:
        emit_json(value)
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
        self.close()

    def close(self) -> None:
        """End the bar's line (a second close does nothing): what follows starts afresh."""
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


def job_line(job: Job) -> str:
    line = f"{job.id}  {job.status}  attempt {job.attempt}/{job.max_attempts}"
    if job.progress is not None:
        line += f"  epoch {job.progress.epoch}/{job.progress.epochs}"
    line += f"\nwaiting: {job.waiting}" if job.waiting else ""
    return line + (f"\nerror: {job.error}" if job.error else "")
