"""A 2 x 2 x 2 sweep on digits, run by a real worker, compared in a table and a plot."""

from __future__ import annotations

import math
import statistics
import struct
import time
from typing import Any

from tests.processes import Service

BASE: dict[str, Any] = {
    "dataset": {"name": "digits", "classes": [0, 1, 2]},
    "imbalance": {"profile": "step", "ratio": 10, "minority": [2]},
    "model": {"arch": "mlp", "width": 32},
    "train": {"epochs": 2, "batch_size": 32},
}
GRID: dict[str, list[Any]] = {
    "loss.type": ["cross_entropy", "focal"],
    "class_weight": [None, "balanced"],
    "train.seed": [0, 1],
}
METRICS = ("balanced_accuracy", "macro_f1", "minority_recall")


def wait_for_sweep(service: Service, sweep_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep: dict[str, Any] = service.http.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["progress"]["ended"] == sweep["progress"]["total"]:
            return sweep
        time.sleep(0.2)
    raise AssertionError(f"sweep did not end\n{service.logs()}")


def test_a_sweep_ends_with_a_table_of_cells_over_seeds(service: Service) -> None:
    response = service.http.post("/v1/sweeps", json={"base": BASE, "grid": GRID})
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    service.start_worker()
    sweep = wait_for_sweep(service, sweep_id)

    assert sweep["status"] == "succeeded", service.logs()
    assert len(sweep["job_ids"]) == 8
    assert [row["cell"] for row in sweep["table"]] == [
        {"loss.type": loss, "class_weight": weight}
        for loss in GRID["loss.type"]
        for weight in GRID["class_weight"]
    ]
    for row in sweep["table"]:
        assert (row["n"], len(row["jobs"])) == (2, 2)
        for metric in METRICS:
            assert math.isfinite(row[metric]["mean"]) and 0 <= row[metric]["mean"] <= 1
            assert math.isfinite(row[metric]["std"]) and row[metric]["std"] >= 0

    # The table aggregates the jobs it names: recompute one row from their own metrics.
    row = sweep["table"][3]
    results = [service.http.get(f"/v1/jobs/{job_id}/metrics").json() for job_id in row["jobs"]]
    specs = [service.job(job_id)["spec"] for job_id in row["jobs"]]
    assert [(s["loss"]["type"], s["class_weight"], s["train"]["seed"]) for s in specs] == [
        ("focal", "balanced", 0),
        ("focal", "balanced", 1),
    ]
    bacc = [r["final"]["balanced_accuracy"] for r in results]
    assert row["balanced_accuracy"]["mean"] == statistics.fmean(bacc)
    assert row["balanced_accuracy"]["std"] == statistics.stdev(bacc)
    recall = [r["final"]["per_class"][2]["recall"] for r in results]  # class 2 is the minority
    assert row["minority_recall"]["mean"] == statistics.fmean(recall)

    plot = service.http.get(f"/v1/sweeps/{sweep_id}/plots/compare.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content[:8] == b"\x89PNG\r\n\x1a\n" and plot.content[12:16] == b"IHDR"
    width, height = struct.unpack(">II", plot.content[16:24])
    assert width >= 400 and height >= 300
