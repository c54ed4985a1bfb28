"""Hostile input: damaged or pickled uploads are a 422 naming the problem (never a
500, never unpickled), dataset paths cannot leave the data root, and stored names are
the server's own. Real app under uvicorn on a real SQLite database."""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from tests.conftest import ThreadedUvicorn

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("service", "workers", "client/counterweight_client")


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    (tmp_path / "data").mkdir()
    settings = Settings(
        home=tmp_path / "home", database_url=database_url, data_root=tmp_path / "data"
    )
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def good_npz() -> bytes:
    x, y = np.random.default_rng(0).random((20, 3), dtype=np.float32), np.arange(20) % 2
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x, y_train=y, x_test=x, y_test=y)
    return buffer.getvalue()


def with_member(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good_npz())) as source, zipfile.ZipFile(buffer, "w") as out:
        for item in source.namelist():
            out.writestr(item, source.read(item) if item != name else data)
    return buffer.getvalue()


def pickled_object_array() -> bytes:
    x = np.empty(20, dtype=object)
    x[:] = [{"evil": i} for i in range(20)]
    buffer = io.BytesIO()
    y = np.arange(20) % 2
    np.savez(buffer, x_train=x, y_train=y, x_test=x, y_test=y)  # object arrays are pickled
    return buffer.getvalue()


BAD_UPLOADS = {
    "truncated zip": (good_npz()[:300], "corrupted or truncated"),
    "random bytes": (os.urandom(4096), "not an .npz archive"),
    "random bytes after the zip magic": (
        b"PK\x03\x04" + os.urandom(4096),
        "corrupted or truncated",
    ),
    "a member that is not .npy": (with_member("x_train.npy", b"just text"), "x_train"),
    "a pickled object array": (pickled_object_array(), "pickled objects"),
    "a bare pickle": (pickle.dumps({"x_train": [1, 2]}), "pickled objects"),
}


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_damaged_and_pickled_uploads_are_422_naming_the_problem(client: httpx.Client) -> None:
    for case, (body, words) in BAD_UPLOADS.items():
        response = client.post("/v1/datasets", files={"file": ("d.npz", body)})
        assert response.status_code == 422, (case, response.text)
        assert words in response.json()["detail"], (case, response.text)
    listed = client.get("/v1/datasets").json()["data"]
    assert [row for row in listed if row["source"] == "uploaded"] == []  # nothing was kept


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_stored_names_are_the_servers(client: httpx.Client, tmp_path: Path) -> None:
    response = client.post("/v1/datasets", files={"file": ("../../../evil.npz", good_npz())})
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", dataset["id"])
    assert dataset["filename"] == "../../../evil.npz"  # shown back, never used as a path
    stored = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npz"))
    assert stored == [f"home/datasets/{dataset['id']}.npz"]


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_image_folder_paths_cannot_leave_the_data_root(
    client: httpx.Client, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "link").symlink_to(outside)
    attempts = {
        "..": "leaves the data root",
        "../outside": "leaves the data root",
        "link": "leaves the data root",
        "link/../..": "leaves the data root",
        str(outside): "is absolute",
        "/etc": "is absolute",
    }
    for path, words in attempts.items():
        for route in ("/v1/jobs", "/v1/jobs/validate"):
            spec = {"dataset": {"name": "image_folder", "path": path}}
            response = client.post(route, json=spec)
            assert response.status_code == 422, (path, response.text)
            assert words in response.json()["detail"], (path, response.text)
    assert client.get("/v1/jobs").json()["data"] == []


# The one unpickler: CIFAR-10's python batches in the operator's data root (no client can
# write or name them), read by an Unpickler whose find_class resolves a numpy array's
# globals and nothing else (test_dataset_loaders: a batch that would run a command is
# refused, and the command never runs).
ARRAY_UNPICKLER = Path("service/data/torchvision_formats.py")


def test_nothing_is_unpickled_anywhere() -> None:
    """An audit of the code: every np.load and torch.load refuses pickles, and nothing
    calls pickle's loaders but the data root's array-only unpickler."""
    assert "def find_class(" in (ROOT / ARRAY_UNPICKLER).read_text()
    offenders = []
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            where = path.relative_to(ROOT)
            if re.search(r"\bpickle\.(loads?|Unpickler)\b", text) and where != ARRAY_UNPICKLER:
                offenders.append(f"{where}: unpickles")
            if re.search(r"^\s*(import|from)\s+(dill|joblib|shelve)\b", text, re.M):
                offenders.append(f"{where}: imports a pickle-based loader")
            for call in re.finditer(r"\b(np|numpy)\.load\(([^()]|\([^()]*\))*\)", text):
                if "allow_pickle=False" not in call.group(0):
                    offenders.append(f"{where}: {call.group(0)}")
            for call in re.finditer(r"\btorch\.load\(([^()]|\([^()]*\))*\)", text):
                if "weights_only=True" not in call.group(0):
                    offenders.append(f"{where}: {call.group(0)}")
    assert not offenders, offenders
