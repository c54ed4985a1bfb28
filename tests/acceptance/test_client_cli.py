"""The client and the CLI against a real API process and a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from safetensors.numpy import load_file

from counterweight.service.data.splits import load_splits
from counterweight.service.spec import JobSpec
from counterweight_client import Client, JobEvent
from tests.processes import Service

TINY: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "width": 32},
    "train": {"epochs": 2, "batch_size": 16, "seed": 0},
}


def cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "counterweight.service.cli", *args, "--url", service.url],
        capture_output=True,
        text=True,
        timeout=180,
        env=service.env,
    )


def test_client_and_cli_on_a_real_service(service: Service, tmp_path: Path) -> None:
    service.start_worker()
    seen: list[JobEvent] = []
    with Client(service.url) as client:
        job = client.submit(TINY)
        done = client.wait(job.id, on_progress=seen.append, timeout=180)
        assert done.status == "succeeded", service.logs()
        assert any(event.type == "status" for event in seen)
        metrics = client.metrics(job.id)
        assert metrics["final"]["accuracy"] > 0.5
        assert len(metrics["final"]["per_class"]) == 10
        model = client.download_model(job.id, tmp_path)
        assert model == tmp_path / f"{job.id}.safetensors"
        weights = load_file(str(model))
        assert weights and all(array.size > 0 for array in weights.values())
        assert client.model_card(job.id)["arch"] == "mlp"

        # predict through the client agrees with the server's own answer for the same inputs.
        splits = load_splits(JobSpec.model_validate(TINY), service.home, service.home)
        inputs = splits.x_test[:5]
        predictions = client.predict(job.id, inputs)
        served = service.http.post(
            f"/v1/jobs/{job.id}/predict", json={"inputs": inputs.tolist()}
        ).json()["predictions"]
        assert [p.class_index for p in predictions] == [p["class"] for p in served]
        assert predictions[0].name == served[0]["name"]

        # A one-cell sweep over two seeds, followed to its end through the client.
        sweep = client.sweep(
            {**TINY, "train": {**TINY["train"], "epochs": 1}}, {"train.seed": [0, 1]}
        )
        assert len(sweep.job_ids) == 2
        deadline = time.monotonic() + 180
        while not (sweep := client.get_sweep(sweep.id)).done:
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.5)
        assert sweep.status == "succeeded"
        [row] = sweep.table
        assert row["n"] == 2 and row["balanced_accuracy"]["std"] is not None

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    submitted = cli(service, "submit", str(spec), "--json")
    assert submitted.returncode == 0, submitted.stderr
    second = json.loads(submitted.stdout)["id"]

    waited = cli(service, "wait", second)
    assert waited.returncode == 0, waited.stderr + service.logs()
    table = waited.stdout
    for word in ("precision", "recall", "f1", "support", "balanced accuracy", "macro F1", "G-mean"):
        assert word in table
    assert len([line for line in table.splitlines() if line[:1].isdigit()]) == 10  # a row a class
    assert "epoch 2/2" in waited.stderr  # the progress bar

    status = json.loads(cli(service, "status", second, "--json").stdout)
    assert status["id"] == second and status["status"] == "succeeded"
    metrics_json = json.loads(cli(service, "metrics", second, "--json").stdout)
    assert metrics_json["final"]["per_class"][0]["class"] == 0
    datasets = json.loads(cli(service, "datasets", "--json").stdout)
    assert any(row["id"] == "digits" for row in datasets)

    missing = cli(service, "status", "0" * 32)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "404" in missing.stderr and "0" * 32 in missing.stderr
