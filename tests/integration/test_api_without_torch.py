"""The API process does not load torch until a predict needs it: importing the app,
starting it, and admitting jobs (their data split, their model sized) leave torch and
torchvision unimported. Each check runs in a fresh interpreter, where nothing else has
imported torch first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.test_dataset_loaders import write_cifar10, write_mnist

SCRIPT = """
import sys

def loaded():
    return sorted(n for n in sys.modules if n.split(".")[0] in ("torch", "torchvision"))

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from starlette.testclient import TestClient

assert not loaded(), ("importing the app", loaded())
home, data = sys.argv[1], sys.argv[2]
app = create_app(Settings(home=home, data_root=data, database_url=f"sqlite:///{home}/cw.db"))
with TestClient(app) as client:
    assert not loaded(), ("starting the app", loaded())
    specs = [
        {"dataset": {"name": "digits"}, "model": {"arch": "resnet32"}},
        {"dataset": {"name": "mnist", "classes": [0, 1]}, "model": {"arch": "small_cnn"}},
        {"dataset": {"name": "cifar10"}, "imbalance": {"profile": "step", "ratio": 2}},
    ]
    for spec in specs:
        for route in ("/v1/jobs/validate", "/v1/jobs"):
            response = client.post(route, json=spec)
            assert response.status_code in (200, 202), response.text
    # Sized without building it: about 118 million parameters, over the default cap.
    too_big = {"dataset": {"name": "digits"}, "model": {"width": 4096, "depth": 8}}
    response = client.post("/v1/jobs", json=too_big)
    assert response.status_code == 422, response.text
    assert "COUNTERWEIGHT_MAX_MODEL_PARAMETERS" in response.json()["detail"]
    assert client.get("/v1/jobs").status_code == 200
    assert not loaded(), ("admitting jobs", loaded())
print("ok")
"""


def test_admitting_jobs_never_imports_torch(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    write_mnist(data, "MNIST")
    write_cifar10(data)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(home), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_check_can_fail() -> None:
    # Were predict's module imported with the app, the first assertion would catch it.
    script = "import sys; import service.api.predict; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "AssertionError" in result.stderr
