"""Uploaded datasets over HTTP: the real app under uvicorn, real SQLite and Postgres, httpx.

Every refusal must be a 4xx whose message names the array at fault, must leave no
file behind, and must never unpickle what the client sent.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from counterweight.service.api.app import create_app
from counterweight.service.data.uploads import load_upload_arrays
from counterweight.service.errors import DatasetError
from counterweight.service.settings import Settings
from counterweight.service.store.engine import make_engine, upgrade
from tests.conftest import ThreadedUvicorn

# Hand-checked class counts: y_train has three 0s, two 1s, one 2; y_test one, one, two.
Y_TRAIN = np.array([0, 0, 0, 1, 1, 2])
Y_TEST = np.array([0, 1, 2, 2])
RNG = np.random.default_rng(0)
FEATURES: dict[str, Any] = {
    "x_train": RNG.random((6, 4)).astype(np.float32),
    "y_train": Y_TRAIN,
    "x_test": RNG.random((4, 4)).astype(np.float32),
    "y_test": Y_TEST,
    "sample_weight": np.array([1.0, 0.5, 2.0, 1.0, 0.0, 3.0]),
}
IMAGES: dict[str, Any] = {
    "x_train": RNG.integers(0, 256, (6, 1, 5, 5), dtype=np.uint8),
    "y_train": Y_TRAIN,
    "x_test": RNG.integers(0, 256, (4, 1, 5, 5), dtype=np.uint8),
    "y_test": Y_TEST,
    # Four names: k comes from class_names, so class 3 exists with no samples.
    "class_names": np.array(["cat", "dog", "eel", "fox"]),
}


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(http: httpx.Client, data: bytes, filename: str = "data.npz") -> httpx.Response:
    return http.post("/v1/datasets", files={"file": (filename, data, "application/octet-stream")})


def stored_files(home: Path) -> list[str]:
    """Everything in the uploads folder, temp files included."""
    folder = home / "datasets"
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """One server for the many refusal cases (each leaves nothing behind)."""
    home = tmp_path_factory.mktemp("shared")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'counterweight.db'}")
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http, home


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("arrays", [FEATURES, IMAGES], ids=["features", "images"])
def test_upload_list_read_and_load_back(
    client: httpx.Client, tmp_path: Path, arrays: dict[str, np.ndarray]
) -> None:
    data = npz(**arrays)
    response = upload(client, data, filename="../../etc/passwd")
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    images = "class_names" in arrays
    assert body["kind"] == ("images" if images else "features")
    assert body["filename"] == "../../etc/passwd"  # kept for display, never used as a path
    assert body["shapes"] == {key: list(array.shape) for key, array in arrays.items()}
    if images:
        assert body["class_counts"] == {"train": [3, 2, 1, 0], "test": [1, 1, 2, 0]}
        assert (body["num_classes"], body["class_names"]) == (4, ["cat", "dog", "eel", "fox"])
    else:
        assert body["class_counts"] == {"train": [3, 2, 1], "test": [1, 1, 2]}
        assert (body["num_classes"], body["class_names"]) == (3, None)
    assert body["has_sample_weight"] is not images
    assert body["size_bytes"] == len(data)
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert body["dataset"] == {"name": "uploaded", "id": body["id"]}
    assert stored_files(tmp_path) == [f"{body['id']}.npz"]

    second = upload(client, data).json()
    listed = client.get("/v1/datasets").json()
    assert listed["next_cursor"] is None
    uploads = [item for item in listed["data"] if item["source"] == "uploaded"]
    assert [item["id"] for item in uploads] == [second["id"], body["id"]]  # newest first
    assert uploads[1] == body
    assert client.get(f"/v1/datasets/{body['id']}").json() == body

    loaded = load_upload_arrays(tmp_path, body["id"])
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(loaded, key), arrays[key])
    assert loaded.x_train.dtype == (np.uint8 if images else np.float32)
    assert loaded.y_train.dtype == np.int64
    if images:
        assert loaded.sample_weight is None
        assert loaded.class_names == ["cat", "dog", "eel", "fox"]
    else:
        assert loaded.sample_weight is not None
        np.testing.assert_array_equal(loaded.sample_weight, arrays["sample_weight"])
        assert loaded.class_names is None


def _with(**changes: Any) -> dict[str, Any]:
    arrays: dict[str, Any] = {**FEATURES, **changes}
    return {key: value for key, value in arrays.items() if value is not None}


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "missing y_test": (_with(y_test=None), "y_test: missing from the .npz"),
    "unknown array": (
        _with(X_train=FEATURES["x_train"]),
        "X_train: not an array a classification upload",
    ),
    "label count": (_with(y_train=Y_TRAIN[:5]), "y_train has 5 labels but x_train has 6 rows"),
    "test rows": (_with(x_test=FEATURES["x_test"][:3]), "y_test has 4 labels but x_test has 3"),
    "sample shape": (
        _with(x_test=np.zeros((4, 5), np.float32)),
        "x_test has samples of shape (5,) but x_train has (4,)",
    ),
    "float labels": (_with(y_train=Y_TRAIN * 1.0), "y_train has dtype float64; expected integer"),
    "2-D labels": (_with(y_test=Y_TEST[:, None]), "y_test has shape (4, 1)"),
    "negative label": (_with(y_test=np.array([0, 1, -1, 2])), "y_test has label -1 at row 2"),
    "label beyond class_names": (
        _with(class_names=np.array(["a", "b"])),
        "y_train has label 2 at row 5; labels must be 0..1 (k from class_names)",
    ),
    "one class": (
        _with(y_train=np.zeros(6, np.int64), y_test=np.zeros(4, np.int64)),
        "y_train: only one class",
    ),
    "integer features": (
        _with(x_train=np.ones((6, 4), np.int64), x_test=np.ones((4, 4), np.int64)),
        "x_train has dtype int64; features (N, D) must be float",
    ),
    "5-D inputs": (
        _with(x_train=np.zeros((6, 1, 1, 2, 2)), x_test=np.zeros((4, 1, 1, 2, 2))),
        "x_train has shape (6, 1, 1, 2, 2); expected (N, D) float features, or (N, H, W)",
    ),
    "NaN feature": (
        _with(x_test=np.where(np.arange(16).reshape(4, 4) == 9, np.nan, 0.5)),
        "x_test has NaN or infinite values, or values too large for float32, the first in row 2",
    ),
    "float image out of range": (
        _with(x_train=np.full((6, 3, 3), 2.0), x_test=np.full((4, 3, 3), 0.5)),
        "x_train holds float images with values from 2 to 2; float images must be in [0, 1]",
    ),
    "int16 images": (
        _with(x_train=np.zeros((6, 3, 3), np.int16), x_test=np.zeros((4, 3, 3), np.int16)),
        "x_train has dtype int16; images must be uint8 (0..255) or float in [0, 1]",
    ),
    "mixed encodings": (
        _with(x_train=np.zeros((6, 3, 3), np.uint8), x_test=np.zeros((4, 3, 3))),
        "x_test has dtype float64 but x_train has uint8",
    ),
    "channel-last images": (
        _with(x_train=np.zeros((6, 5, 5, 3), np.uint8), x_test=np.zeros((4, 5, 5, 3), np.uint8)),
        "must be channel-first with C = 1 or 3; it looks channel-last",
    ),
    "sample_weight shape": (
        _with(sample_weight=np.ones(7)),
        "sample_weight has shape (7,); x_train has 6 rows, so it must have shape (6,)",
    ),
    "negative sample_weight": (
        _with(sample_weight=np.array([1.0, 1.0, -0.5, 1.0, 1.0, 1.0])),
        "sample_weight has 1 negative or non-finite values, the first at row 2",
    ),
    "class_names of numbers": (
        _with(class_names=np.arange(3)),
        "class_names has shape (3,) and dtype int64; expected a 1-D array of strings",
    ),
    "duplicate class_names": (
        _with(class_names=np.array(["a", "b", "a"])),
        "class_names has 3 names; expected one distinct, non-empty name per class",
    ),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_upload_is_422_naming_the_array(
    shared: tuple[httpx.Client, Path], case: str
) -> None:
    http, home = shared
    arrays, message = INVALID[case]
    response = upload(http, npz(**arrays))
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert stored_files(home) == []


class MakesDirectory:
    """Unpickling this calls os.mkdir(path): proof, on disk, that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def test_pickled_objects_are_refused_and_never_unpickled(
    shared: tuple[httpx.Client, Path], tmp_path: Path
) -> None:
    http, home = shared
    # The trap is armed: loading such a file the unsafe way does create the directory.
    armed = io.BytesIO(npz(**_with(x_train=np.array([MakesDirectory(tmp_path / "armed")] * 6))))
    np.load(armed, allow_pickle=True)["x_train"]
    assert (tmp_path / "armed").is_dir()

    marker = tmp_path / "unpickled"
    payloads = {
        "object array in the .npz": npz(
            **_with(x_train=np.array([MakesDirectory(marker)] * 6, dtype=object))
        ),
        "a bare pickle": pickle.dumps(MakesDirectory(marker)),
    }
    for what, data in payloads.items():
        response = upload(http, data)
        assert response.status_code == 422, what
        assert (
            "the file holds pickled objects; only plain numeric arrays are accepted"
            in (response.json()["detail"])
        )
    assert not marker.exists()
    assert stored_files(home) == []


def test_damaged_and_foreign_files_are_422(shared: tuple[httpx.Client, Path]) -> None:
    http, home = shared
    valid = npz(**FEATURES)
    compressed = io.BytesIO()
    np.savez_compressed(compressed, **FEATURES)
    flipped = bytearray(valid)
    flipped[valid.index(FEATURES["x_train"].tobytes()) + 5] ^= 0xFF  # x_train's CRC fails now
    npy = io.BytesIO()
    np.save(npy, FEATURES["x_train"])
    cases = {
        "truncated": (valid[: len(valid) // 2], "file: the .npz archive is corrupted or truncated"),
        "corrupted member": (bytes(flipped), "x_train: cannot be read"),
        "truncated compressed": (compressed.getvalue()[:-200], "corrupted or truncated"),
        "a single .npy": (npy.getvalue(), "file: this is a single .npy array"),
        "text": (b"x_train,y_train\n1,2\n", "file: not an .npz archive"),
        "empty": (b"", "file: not an .npz archive"),
    }
    for what, (data, message) in cases.items():
        response = upload(http, data)
        assert response.status_code == 422, what
        assert message in response.json()["detail"], what
    assert stored_files(home) == []


def test_missing_file_field_and_malformed_bodies_are_422(
    shared: tuple[httpx.Client, Path],
) -> None:
    http, home = shared
    wrong_field = http.post("/v1/datasets", files={"data": ("d.npz", npz(**FEATURES))})
    as_json = http.post("/v1/datasets", json={"file": "d.npz"})
    for response in (wrong_field, as_json):
        assert response.status_code == 422
        assert response.json()["detail"].startswith("file: missing; send the .npz as the")

    def raw(body: bytes) -> httpx.Response:
        headers = {"content-type": "multipart/form-data; boundary=b"}
        return http.post("/v1/datasets", content=body, headers=headers)

    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.npz"\r\n\r\n'
    cases = {
        "file: sent more than once": raw(part + b"1\r\n" + part + b"2\r\n--b--\r\n"),
        "file: the multipart body ended before its closing boundary": raw(part + npz(**FEATURES)),
        "file: the body is not valid multipart/form-data": raw(b"no boundary anywhere"),
        "file: the body is not valid multipart/form-data (Maximum header size exceeded)": raw(
            b"--b\r\nX-Pad: " + b"a" * 9000
        ),
    }
    for message, response in cases.items():
        assert response.status_code == 422, message
        assert response.json()["detail"].startswith(message)
    assert stored_files(home) == []


def test_uploads_over_the_caps_are_413(database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        database_url=database_url,
        max_upload_bytes=4000,
        max_upload_array_bytes=100_000,
    )
    big = npz(**_with(x_train=np.zeros((6, 4000), np.float32)))  # 96 kB: over cap + overhead
    compressed = io.BytesIO()  # 2 MB of zeros in under 4 kB
    zeros = _with(
        x_train=np.zeros((6, 200, 1000), np.uint8), x_test=np.zeros((4, 200, 1000), np.uint8)
    )
    np.savez_compressed(compressed, **zeros)
    assert len(compressed.getvalue()) < 4000

    boundary = "cw-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.npz"\r\n\r\n'

    def chunked() -> Iterator[bytes]:  # no Content-Length: the server must count the bytes
        yield head.encode()
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]
        yield f"\r\n--{boundary}--\r\n".encode()

    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        declared = upload(http, big)
        streamed = http.post(
            "/v1/datasets",
            content=chunked(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        expanding = upload(http, compressed.getvalue())
        fits = upload(http, npz(**FEATURES))
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["detail"] == (
            "file: larger than the upload limit of 4000 bytes (COUNTERWEIGHT_MAX_UPLOAD_BYTES)"
        )
    assert expanding.status_code == 413
    assert (
        "the limit is 100000 bytes (COUNTERWEIGHT_MAX_UPLOAD_ARRAY_BYTES)"
        in (expanding.json()["detail"])
    )
    assert fits.status_code == 201
    assert stored_files(tmp_path) == [f"{fits.json()['id']}.npz"]


def test_a_failed_insert_leaves_no_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'counterweight.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:  # a real database that cannot take the row
        conn.execute(text("DROP TABLE datasets"))
    engine.dispose()
    settings = Settings(home=tmp_path, database_url=url)
    with ThreadedUvicorn(create_app(settings)) as base, httpx.Client(base_url=base) as http:
        assert upload(http, npz(**FEATURES)).status_code == 500
    assert stored_files(tmp_path) == []


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_builtins_are_listed_with_availability(client: httpx.Client, tmp_path: Path) -> None:
    def builtins() -> dict[str, dict[str, Any]]:
        listed = client.get("/v1/datasets").json()["data"]
        return {item["id"]: item for item in listed if item["source"] == "builtin"}

    data_root = tmp_path / "data"
    before = builtins()
    assert list(before) == ["digits", "mnist", "fashion_mnist", "cifar10", "image_folder"]
    assert {name: item["available"] for name, item in before.items()} == {
        "digits": True,
        "mnist": False,
        "fashion_mnist": False,
        "cifar10": False,
        "image_folder": False,  # the data root does not exist yet
    }
    assert before["cifar10"]["location"] == "cifar-10-batches-py"  # relative to the data root
    assert before["mnist"]["location"] == "MNIST/raw"

    cifar = data_root / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "test_batch"]:
        (cifar / name).write_bytes(b"")
    assert builtins()["cifar10"]["available"] is False  # data_batch_5, batches.meta missing
    (cifar / "data_batch_5").write_bytes(b"")
    (cifar / "batches.meta").write_bytes(b"")
    after = builtins()
    assert (after["cifar10"]["available"], after["image_folder"]["available"]) == (True, True)
    assert after["mnist"]["available"] is False

    assert client.get("/v1/datasets/cifar10").json() == after["cifar10"]
    assert client.get("/v1/datasets/digits").json()["available"] is True
    for unknown in ("nope", "0" * 32, "..%2E%2E"):
        response = client.get(f"/v1/datasets/{unknown}")
        assert response.status_code == 404
        assert "not an upload id, nor a built-in name" in response.json()["detail"]


def test_load_upload_arrays_refuses_unknown_ids(tmp_path: Path) -> None:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "outside.npz").write_bytes(npz(**FEATURES))
    for dataset_id in ("0" * 32, "../outside", "nope"):
        with pytest.raises(DatasetError, match=r"^dataset.id: no uploaded dataset"):
            load_upload_arrays(tmp_path, dataset_id)
