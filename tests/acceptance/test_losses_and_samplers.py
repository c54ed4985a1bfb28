"""Every loss and every sampler trains a real job on a real worker process.

The jobs are tiny (an MLP of width 32, 2 epochs, three digits classes with the
third ten times rarer) and go to one worker together, so the worker's start-up
is paid once. The cross-entropy job is also the `sampler: none` job.
"""

from __future__ import annotations

import math
from typing import Any

from tests.processes import Service

BASE: dict[str, Any] = {
    "dataset": {"name": "digits", "classes": [0, 1, 2]},
    "imbalance": {"profile": "step", "ratio": 10, "minority": [2]},
    "model": {"arch": "mlp", "width": 32, "depth": 1},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 0},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "cross_entropy": {"loss": {"type": "cross_entropy", "label_smoothing": 0.1}},
    "focal": {"loss": {"type": "focal", "gamma": 2.0, "alpha": [0.25, 0.25, 0.5]}},
    "class_balanced": {"loss": {"type": "class_balanced", "beta": 0.99, "base": "focal"}},
    "ldam": {"loss": {"type": "ldam", "drw_epoch": 2}},
    "balanced_softmax": {"loss": {"type": "balanced_softmax"}},
    "logit_adjusted": {"loss": {"type": "logit_adjusted", "tau": 1.5}},
    "oversample": {"sampler": "oversample"},
    "undersample": {"sampler": "undersample"},
}


def test_every_loss_and_sampler_trains_on_a_worker(service: Service) -> None:
    specs = {name: {**BASE, **changes} for name, changes in VARIANTS.items()}
    reports = {
        name: service.http.post("/v1/jobs/validate", json=spec).json()
        for name, spec in specs.items()
    }
    job_ids = {name: service.submit(spec) for name, spec in specs.items()}
    service.start_worker()

    for name, job_id in job_ids.items():
        job = service.wait_until_ended(job_id)
        assert job["status"] == "succeeded", (name, job, service.logs())
        metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()
        assert [row["epoch"] for row in metrics["history"]] == [1, 2], name
        assert all(math.isfinite(row["train_loss"]) for row in metrics["history"]), name
        # Three easy digit classes: far better than chance (1/3) even after 2 short epochs.
        assert metrics["final"]["balanced_accuracy"] > 0.6, (name, metrics["final"])
        # The worker trained with the weights the API reported at validation.
        assert metrics["train_class_counts"] == reports[name]["counts"]["train"], name
        assert metrics["class_weight"] == reports[name]["class_weight"], name

    # The minority class really is rare, and the losses that re-weight by class say so.
    counts = reports["cross_entropy"]["counts"]["train"]
    assert counts[0] >= 8 * counts[2]
    cb_weight = reports["class_balanced"]["class_weight"]
    assert cb_weight[2] > cb_weight[0]
    assert reports["focal"]["class_weight"] == [0.25, 0.25, 0.5]
