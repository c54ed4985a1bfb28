"""Each dataset loader on small files written here in the real on-disk format, read back
through the real readers (idx and CIFAR-10 batches, PIL, the upload store), and through
HTTP."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from counterweight.service.api.app import create_app
from counterweight.service.data import sources
from counterweight.service.data.splits import load_splits, plan_splits
from counterweight.service.data.uploads import upload_path
from counterweight.service.errors import DatasetError
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.workers.training.engine import train_job
from tests.conftest import ThreadedUvicorn

CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def spec(dataset: dict[str, Any], **fields: Any) -> JobSpec:
    return JobSpec.model_validate({"dataset": dataset, **fields})


def pixels(seed: int, shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def balanced_labels(n: int, k: int = 10) -> npt.NDArray[np.uint8]:
    return (np.arange(n) % k).astype(np.uint8)


# --- MNIST and FashionMNIST: idx files ---------------------------------------------------


def write_idx(path: Path, array: npt.NDArray[np.uint8]) -> None:
    """The idx format: magic (0, 0, type 0x08 = uint8, number of dimensions), each
    dimension as a big-endian int32, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.tobytes())


def write_mnist(root: Path, folder: str, n_train: int = 40, n_test: int = 20) -> dict[str, Any]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": pixels(1, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": balanced_labels(n_train),
        "t10k-images-idx3-ubyte": pixels(2, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": balanced_labels(n_test)[::-1].copy(),
    }
    for name, array in arrays.items():
        write_idx(raw / name, array)
    return arrays


@pytest.mark.parametrize(
    ("name", "folder", "first_class"),
    [("mnist", "MNIST", "0"), ("fashion_mnist", "FashionMNIST", "T-shirt/top")],
)
def test_mnist_idx_files(tmp_path: Path, name: str, folder: str, first_class: str) -> None:
    written = write_mnist(tmp_path, folder)
    # All classes, no validation to speak of: the stored rows come back in stored order.
    plan = plan_splits(spec({"name": name, "val_fraction": 0.25}), tmp_path)
    base = plan.base
    assert base.x_train.dtype == np.uint8 and base.x_train.shape == (40, 1, 28, 28)
    np.testing.assert_array_equal(base.x_train[:, 0], written["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(base.y_train, written["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(base.x_test[:, 0], written["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(base.y_test, written["t10k-labels-idx1-ubyte"])
    assert plan.class_names[0] == first_class and len(plan.class_names) == 10
    assert plan.counts == {"train": [3] * 10, "val": [1] * 10, "test": [2] * 10}


def test_a_missing_dataset_names_the_folder_it_expects(tmp_path: Path) -> None:
    for name, folder in [
        ("cifar10", "cifar-10-batches-py"),
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
    ]:
        expected = f"dataset.name: {name} is not available: expected torchvision's"
        with pytest.raises(DatasetError, match=re.escape(expected)) as error:
            plan_splits(spec({"name": name}), tmp_path)
        assert str(error.value).endswith(f" in {folder} under the data root")


def test_a_damaged_file_is_a_dataset_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DatasetError, match=re.escape("dataset.name: cannot read mnist from")):
        plan_splits(spec({"name": "mnist"}), tmp_path)


# --- CIFAR-10: python batches -------------------------------------------------------------


def write_cifar10(root: Path, per_batch: int = 10, n_test: int = 20) -> dict[str, Any]:
    """CIFAR-10's python version: five training batches and a test batch, each a pickled
    dict with `data` (n, 3072) uint8 rows (1024 red, 1024 green, 1024 blue values, row-major
    32x32) and `labels`; batches.meta holds `label_names`."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": (pixels(i, (per_batch, 3072)), i) for i in range(1, 6)}
    batches["test_batch"] = (pixels(9, (n_test, 3072)), 0)
    for name, (data, shift) in batches.items():
        labels = [int(label + shift) % 10 for label in balanced_labels(len(data))]
        with (folder / name).open("wb") as file:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, file)
    with (folder / "batches.meta").open("wb") as file:
        pickle.dump({"label_names": CIFAR_NAMES, "num_vis": 3072}, file)
    return batches


def test_cifar10_python_batches(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    job = spec({"name": "cifar10", "classes": [3, 5]}, imbalance={"profile": "none"})
    plan = plan_splits(job, tmp_path)
    base = plan.base
    assert base.x_train.shape == (50, 3, 32, 32) and base.x_train.dtype == np.uint8
    assert base.class_names == CIFAR_NAMES
    # Row 0 of batch 2 is the 11th training image: its three 32x32 planes, channel-first.
    data_2, _ = batches["data_batch_2"]
    np.testing.assert_array_equal(base.x_train[10], data_2[0].reshape(3, 32, 32))
    assert base.y_train[10] == 2  # labels of batch i start at i
    assert plan.class_names == ["cat", "dog"]
    # Cats and dogs: 5 of each in training, 2 of each in the untouched test split.
    assert [a + b for a, b in zip(plan.counts["train"], plan.counts["val"], strict=True)] == [5, 5]
    assert plan.counts["test"] == [2, 2]


def test_cifar10_batches_pickled_by_older_numpy_and_python_load(tmp_path: Path) -> None:
    # The official files are Python 2 pickles that name numpy.core (numpy 2 moved it to
    # numpy._core); a protocol 2 pickle from Python 3 also calls _codecs.encode for bytes.
    batches = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for name in batches:
        entry = pickle.loads((folder / name).read_bytes())
        old = pickle.dumps(entry, protocol=2).replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy.core.multiarray" in old and b"_codecs" in old
        (folder / name).write_bytes(old)
    base = plan_splits(spec({"name": "cifar10"}), tmp_path).base
    data_2, _ = batches["data_batch_2"]
    np.testing.assert_array_equal(base.x_train[10], data_2[0].reshape(3, 32, 32))


class _RunsACommand:
    """Pickles as a call of os.system: what a hostile file in a data root could hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_cifar10_batch_that_would_run_code_is_refused_without_running_it(
    tmp_path: Path,
) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "ran"
    with (tmp_path / "cifar-10-batches-py" / "data_batch_3").open("wb") as file:
        pickle.dump({"data": _RunsACommand(marker), "labels": [0]}, file)
    expected = "dataset.name: cannot read cifar10 from"
    with pytest.raises(DatasetError, match=re.escape(expected)) as error:
        plan_splits(spec({"name": "cifar10"}), tmp_path)
    assert "system is not part of a numpy array" in str(error.value)
    assert not marker.exists()


# --- image_folder ---------------------------------------------------------------------------


def write_image(path: Path, array: npt.NDArray[np.uint8]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (6, 4)) -> Path:
    """PNG images of `size` (height, width), `n` per class in train/ and 2 in test/; pixel
    (0, 0) of image i of class c holds (c, i, 0), so every image is recognisable."""
    folder = root / "pets"
    for c, (name, n) in enumerate(classes.items()):
        for split, count in (("train", n), ("test", 2)):
            for i in range(count):
                image = pixels(100 * c + i, (*size, 3))
                image[0, 0] = (c, i, 0)
                write_image(folder / split / name / f"{i:03d}.png", image)
    return folder


def test_image_folder_classes_rows_and_pixels(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {"dog": 3, "cat": 4})
    (folder / "train" / "cat" / "notes.txt").write_text("not an image")
    (folder / "train" / ".ipynb_checkpoints").mkdir()
    base = plan_splits(spec({"name": "image_folder", "path": "pets"}), tmp_path).base
    assert base.class_names == ["cat", "dog"]  # sorted, like torchvision's ImageFolder
    assert base.x_train.shape == (7, 3, 6, 4) and base.x_train.dtype == np.uint8
    # Class by class, by file name within a class: cat 000..003, then dog 000..002.
    assert base.y_train.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert [tuple(x[:, 0, 0]) for x in base.x_train] == [
        (1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 3, 0), (0, 0, 0), (0, 1, 0), (0, 2, 0)
    ]  # fmt: skip
    first_cat = np.asarray(Image.open(folder / "train" / "cat" / "000.png"))
    np.testing.assert_array_equal(base.x_train[0], first_cat.transpose(2, 0, 1))
    assert base.y_test.tolist() == [0, 0, 1, 1]


def test_image_folder_grayscale_stays_one_channel_unless_mixed_with_colour(
    tmp_path: Path,
) -> None:
    gray = pixels(1, (5, 5))
    for split in ("train", "test"):
        for name in ("a", "b"):
            write_image(tmp_path / "gray" / split / name / "0.png", gray)
            write_image(tmp_path / "gray" / split / name / "1.jpg", gray)
    base = plan_splits(spec({"name": "image_folder", "path": "gray"}), tmp_path).base
    assert base.x_train.shape == (4, 1, 5, 5)
    np.testing.assert_array_equal(base.x_train[0, 0], gray)  # the PNG, exactly

    # One colour image makes the whole dataset RGB; gray images repeat over the channels.
    write_image(tmp_path / "gray" / "test" / "b" / "2.png", pixels(2, (5, 5, 3)))
    base = plan_splits(spec({"name": "image_folder", "path": "gray"}), tmp_path).base
    assert base.x_train.shape == (4, 3, 5, 5)
    for channel in range(3):
        np.testing.assert_array_equal(base.x_train[0, channel], gray)


def test_image_folder_of_mixed_sizes_names_the_odd_file(tmp_path: Path) -> None:
    write_folder(tmp_path, {"cat": 2, "dog": 2})
    write_image(tmp_path / "pets" / "test" / "dog" / "odd.jpg", pixels(3, (8, 4, 3)))
    message = "every image must have the same size; pets/test/dog/odd.jpg is 4x8 but"
    with pytest.raises(DatasetError, match=re.escape(message)):
        plan_splits(spec({"name": "image_folder", "path": "pets"}), tmp_path)


def test_image_folder_structure_errors(tmp_path: Path) -> None:
    def refused(folder: Path, message: str) -> None:
        job = spec({"name": "image_folder", "path": folder.name})
        with pytest.raises(DatasetError, match=re.escape(f"dataset.path: {message}")):
            plan_splits(job, tmp_path)

    empty = write_folder(tmp_path / "a", {"cat": 2, "dog": 2}).rename(tmp_path / "empty")
    for image in (empty / "test" / "dog").iterdir():
        image.rename(image.with_suffix(".bin"))
    refused(empty, "empty/test/dog holds no images (.bmp, .gif")

    renamed = write_folder(tmp_path / "b", {"cat": 2, "dog": 2}).rename(tmp_path / "renamed")
    (renamed / "test" / "dog").rename(renamed / "test" / "wolf")
    refused(renamed, "train/ and test/ of 'renamed' must hold the same class folders; "
            "only in train/: ['dog'], only in test/: ['wolf']")  # fmt: skip

    broken = write_folder(tmp_path / "c", {"cat": 2, "dog": 2}).rename(tmp_path / "broken")
    (broken / "test" / "cat" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    refused(broken, "cannot decode broken/test/cat/001.png")

    no_test = write_folder(tmp_path / "d", {"cat": 2, "dog": 2}).rename(tmp_path / "no_test")
    (no_test / "test").rename(no_test / "tests")
    refused(no_test, "'no_test' has no test/ folder; expected train/<class>/<images>")
    refused(tmp_path / "nowhere", "'nowhere' is not a folder under the data root")


def test_image_folder_paths_that_leave_the_data_root_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_folder(outside, {"cat": 2, "dog": 2})
    write_folder(root, {"cat": 2, "dog": 2})
    for path in ["../outside/pets", str(outside / "pets"), "pets/../../outside/pets"]:
        with pytest.raises(DatasetError, match="leaves the data root"):
            plan_splits(spec({"name": "image_folder", "path": path}), root)
    (root / "linked").symlink_to(outside / "pets")
    with pytest.raises(DatasetError, match="'linked' leaves the data root"):
        plan_splits(spec({"name": "image_folder", "path": "linked"}), root)
    # A link inside the folder that points out of the root is refused too...
    (root / "pets" / "train" / "cat" / "002.png").symlink_to(outside / "pets/train/cat/000.png")
    with pytest.raises(DatasetError, match=re.escape("pets/train/cat/002.png is a link that")):
        plan_splits(spec({"name": "image_folder", "path": "pets"}), root)
    # ... while one that stays inside is followed.
    (root / "pets" / "train" / "cat" / "002.png").unlink()
    (root / "pets" / "train" / "cat" / "002.png").symlink_to(root / "pets/train/dog/000.png")
    plan = plan_splits(spec({"name": "image_folder", "path": "pets"}), root)
    assert plan.counts["train"][0] + plan.counts["val"][0] == 3


def test_a_dataset_is_decoded_once_until_its_folder_changes(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {"cat": 2, "dog": 2})
    job = spec({"name": "image_folder", "path": "pets"})
    sources.dataset_cache().clear()
    first = plan_splits(job, tmp_path).base
    assert plan_splits(job, tmp_path).base is first  # the same arrays, not a new decode
    cache = sources.dataset_cache()
    assert (cache.misses, cache.hits) == (1, 1)
    write_image(folder / "train" / "dog" / "new.png", pixels(5, (6, 4, 3)))
    assert len(plan_splits(job, tmp_path).base.y_train) == 5
    assert sources.dataset_cache().misses == 2


def test_an_image_folder_job_trains_on_pixels_scaled_to_unit_range(tmp_path: Path) -> None:
    write_folder(tmp_path, {"cat": 4, "dog": 4}, size=(4, 4))
    job = spec(
        {"name": "image_folder", "path": "pets", "val_fraction": 0.25},
        train={"epochs": 1, "batch_size": 4},
        model={"arch": "mlp", "width": 8, "depth": 1},
    )
    result = train_job(
        job, tmp_path / "job", device="cpu", data_root=tmp_path, report=lambda _: None,
        should_stop=lambda: False,
    )  # fmt: skip
    assert result is not None
    # Normalisation statistics are of x / 255: random pixels average about 0.5, not 127.
    means = result.card["normalization"]["mean"]
    assert len(means) == 3 and all(0.3 < m < 0.7 for m in means)
    assert result.metrics["final"]["confusion_matrix"] is not None


# --- uploaded ------------------------------------------------------------------------------


def write_upload(home: Path, dataset_id: str, **arrays: Any) -> None:
    path = upload_path(home, dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_uploaded_images_and_their_sample_weights(tmp_path: Path) -> None:
    upload_id = "0" * 31 + "1"
    y_train = np.repeat(np.arange(3), 10)
    write_upload(
        tmp_path,
        upload_id,
        x_train=pixels(1, (30, 5, 5)),  # (N, H, W): one channel
        y_train=y_train,
        x_test=pixels(2, (6, 5, 5)),
        y_test=np.arange(6) % 3,
        sample_weight=np.arange(30, dtype=np.float32),  # each row's weight is its number
        class_names=np.array(["ant", "bee", "cow"]),
    )
    job = spec(
        {"name": "uploaded", "id": upload_id, "classes": [2, 0]},
        imbalance={"profile": "counts", "counts": [4, 10]},
        sample_weight="from_dataset",
    )
    s = load_splits(job, tmp_path, home=tmp_path)
    assert s.class_names == ["cow", "ant"] and s.input_shape == (1, 5, 5)
    assert s.x_train.dtype == np.uint8
    assert s.sample_weight is not None
    origin = s.sample_weight.astype(np.int64)
    np.testing.assert_array_equal(np.array([2, 0])[s.y_train], y_train[origin])
    assert sorted(s.train_class_counts) == [3, 9]


def test_uploaded_dataset_errors(tmp_path: Path) -> None:
    upload_id = "0" * 31 + "2"
    features = np.random.default_rng(0).random((8, 3))
    write_upload(
        tmp_path, upload_id, x_train=features, y_train=np.arange(8) % 2,
        x_test=features[:4], y_test=np.arange(4) % 2,
    )  # fmt: skip
    features_job = spec({"name": "uploaded", "id": upload_id})
    s = load_splits(features_job, tmp_path, home=tmp_path)
    assert s.x_train.dtype == np.float32 and s.input_shape == (3,) and s.class_names == ["0", "1"]
    message = (
        f"from_dataset needs an uploaded dataset with a sample_weight array; dataset {upload_id}"
    )
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_splits(
            features_job.model_copy(update={"sample_weight": "from_dataset"}),
            tmp_path,
            home=tmp_path,
        )
    unknown = spec({"name": "uploaded", "id": "f" * 32})
    with pytest.raises(DatasetError, match=re.escape("dataset.id: no uploaded dataset")):
        load_splits(unknown, tmp_path, home=tmp_path)


# --- through HTTP ---------------------------------------------------------------------------


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url, data_root=tmp_path / "data")
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def test_submit_time_checks_answer_422_with_the_reason(
    client: httpx.Client, tmp_path: Path
) -> None:
    wrong_shape = client.post(
        "/v1/jobs", json={"dataset": {"name": "digits"}, "sample_weight": [1.0] * 7}
    )
    assert wrong_shape.status_code == 422
    assert wrong_shape.json()["detail"] == (
        "sample_weight has shape (7,); the training set has 1347 samples, "
        "so it must have shape (1347,)"
    )
    missing = client.post("/v1/jobs", json={"dataset": {"name": "cifar10"}})
    assert missing.status_code == 422
    assert "in cifar-10-batches-py under the data root" in missing.json()["detail"]
    escaping = client.post("/v1/jobs", json={"dataset": {"name": "image_folder", "path": "../.."}})
    assert escaping.status_code == 422 and "leaves the data root" in escaping.json()["detail"]
    assert client.get("/v1/jobs").json()["data"] == []  # nothing was queued

    write_folder(tmp_path / "data", {"cat": 5, "dog": 5})
    accepted = client.post("/v1/jobs", json={"dataset": {"name": "image_folder", "path": "pets"}})
    assert accepted.status_code == 202, accepted.text
