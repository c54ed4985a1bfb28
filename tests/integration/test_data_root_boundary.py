"""The data root is a boundary both ways: an image_folder dataset reads nothing outside it,
whichever level of the folder a link sits at, and no answer shows where the data root
(or the home) is on the server. Real files, real PIL, the real training entry point, and
the real app under uvicorn."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from counterweight.service.api.app import create_app
from counterweight.service.data.splits import plan_splits
from counterweight.service.data.torchvision_formats import IDX_FILES
from counterweight.service.errors import DatasetError
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.worker import Worker
from tests.conftest import ThreadedUvicorn

# --- every file the process opens or lists, while a test watches ---------------------------

_touched: list[str] | None = None
_WATCHED_EVENTS = frozenset({"open", "os.scandir", "os.listdir", "os.walk"})


def _audit(event: str, args: tuple[Any, ...]) -> None:
    touched = _touched
    if touched is None or event not in _WATCHED_EVENTS or not args:
        return
    if isinstance(args[0], str | bytes | os.PathLike):
        touched.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # for the whole process, so it only records while one is set


def watched(run: Callable[[], object], outside: Path) -> tuple[list[str], Exception | None]:
    """Run `run()`: what it opened or listed that lies in `outside` (links followed), and
    what it raised."""
    global _touched
    _touched, raised = [], None
    try:
        run()
    except Exception as exc:
        raised = exc
    finally:
        seen, _touched = _touched, None
    return [p for p in seen if Path(p).resolve().is_relative_to(outside.resolve())], raised


# --- image folders ------------------------------------------------------------------------


def write_images(folder: Path, size: tuple[int, int] = (4, 4)) -> Path:
    """train/ and test/ of two classes, 3 and 2 PNGs each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / split / name / f"{i:03d}.png")
    return folder


def link_out_at_every_level(root: Path, outside: Path) -> dict[str, tuple[str, str]]:
    """One dataset per level whose link there points outside the root: level ->
    (dataset.path, what the refusal says)."""
    pets = write_images(outside / "pets")
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset").symlink_to(pets)
    (root / "via").symlink_to(outside)  # a link in the middle of dataset.path
    write_images(root / "split")
    shutil.rmtree(root / "split" / "train")
    (root / "split" / "train").symlink_to(pets / "train")
    write_images(root / "class")
    shutil.rmtree(root / "class" / "train" / "cat")
    (root / "class" / "train" / "cat").symlink_to(pets / "train" / "cat")
    write_images(root / "file")
    (root / "file" / "test" / "dog" / "009.png").symlink_to(pets / "test" / "dog" / "000.png")
    return {
        "dataset folder": ("dataset", "dataset.path: 'dataset' leaves the data root"),
        "a folder on the way": ("via/pets", "dataset.path: 'via/pets' leaves the data root"),
        "split folder": ("split", "dataset.path: split/train is a link that leaves the data root"),
        "class folder": (
            "class",
            "dataset.path: class/train/cat is a link that leaves the data root",
        ),
        "file": ("file", "dataset.path: file/test/dog/009.png is a link that leaves the data root"),
    }


def spec(path: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset": {"name": "image_folder", "path": path, "val_fraction": 0.34},
            "model": {"arch": "mlp", "width": 4, "depth": 1},
            "train": {"epochs": 1, "batch_size": 4},
        }
    )


def test_a_link_out_of_the_root_at_any_level_is_refused_and_nothing_outside_is_read(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    for level, (path, message) in link_out_at_every_level(root, outside).items():

        def train(path: str = path) -> None:  # the worker's entry point
            train_job(
                spec(path), tmp_path / "job", device="cpu", data_root=root,
                report=lambda _: None, should_stop=lambda: False,
            )  # fmt: skip

        touched, raised = watched(train, outside)
        assert touched == [], level
        assert isinstance(raised, DatasetError) and str(raised) == message, (level, raised)


def test_a_link_that_stays_inside_the_root_is_followed_at_any_level(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pets = write_images(root / "pets")
    (root / "dataset").symlink_to(pets)
    (root / "split" / "test").mkdir(parents=True)
    (root / "split" / "train").symlink_to(Path("..") / "pets" / "train")  # relative
    for name in ("cat", "dog"):
        (root / "split" / "test" / name).symlink_to(pets / "test" / name)
    shutil.copytree(pets, root / "file")
    (root / "file" / "train" / "dog" / "009.png").symlink_to(pets / "train" / "cat" / "000.png")
    for path, train_dogs in (("dataset", 3), ("split", 3), ("file", 4)):
        plan = plan_splits(spec(path), root)
        assert sum(plan.counts["train"]) + sum(plan.counts["val"]) == 3 + train_dogs, path
        assert sum(plan.counts["test"]) == 4, path


# --- through HTTP: refusals, and no answer shows a server path -----------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url, data_root=tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def post_both(client: httpx.Client, dataset: dict[str, Any]) -> list[httpx.Response]:
    job = {"dataset": dataset, "model": {"arch": "mlp", "width": 4}}
    return [client.post(route, json=job) for route in ("/v1/jobs/validate", "/v1/jobs")]


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_submit_and_validate_refuse_a_link_out_at_every_level(
    client: httpx.Client, tmp_path: Path
) -> None:
    levels = link_out_at_every_level(tmp_path / "data", tmp_path / "outside")
    for level, (path, message) in levels.items():
        for response in post_both(client, {"name": "image_folder", "path": path}):
            assert response.status_code == 422, (level, response.text)
            assert response.json()["detail"] == message, level
    assert client.get("/v1/jobs").json()["data"] == []


def server_paths(tmp_path: Path) -> list[str]:
    """How the data root and the home could appear: as configured and links resolved."""
    places = [tmp_path / "data", tmp_path / "home"]
    return sorted({str(p) for p in places} | {str(p.resolve()) for p in places})


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_no_answer_shows_where_the_data_root_or_the_home_is(
    client: httpx.Client, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    link_out_at_every_level(data, tmp_path / "outside")
    write_images(data / "broken")
    (data / "broken" / "test" / "cat" / "001.png").write_bytes(b"not an image")  # PIL names it
    write_images(data / "odd")
    Image.new("RGB", (7, 3)).save(data / "odd" / "train" / "dog" / "odd.png")
    (data / "MNIST" / "raw").mkdir(parents=True)
    for name in IDX_FILES:
        (data / "MNIST" / "raw" / name).write_bytes(b"\x00\x00\x08")  # a header cut short

    answers: dict[str, httpx.Response] = {}
    datasets: list[dict[str, Any]] = [
        {"name": "cifar10"},
        {"name": "mnist"},
        {"name": "uploaded", "id": "0" * 32},
        *({"name": "image_folder", "path": p} for p in ("..", "nowhere", "pets/../../..")),
        *({"name": "image_folder", "path": p} for p in ("dataset", "split", "class", "file")),
        {"name": "image_folder", "path": "broken"},
        {"name": "image_folder", "path": "odd"},
    ]
    for dataset in datasets:
        validate, submit = post_both(client, dataset)
        answers[f"validate {dataset}"], answers[f"submit {dataset}"] = validate, submit
        assert validate.status_code == submit.status_code == 422, (dataset, submit.text)
    for path in ("/v1/datasets", "/v1/datasets/cifar10", "/v1/datasets/image_folder"):
        answers[path] = client.get(path)
        assert answers[path].status_code == 200
    answers["upload"] = client.post("/v1/datasets", files={"file": ("d.npz", b"PK\x03\x04 no")})
    assert answers["upload"].status_code == 422

    for what, answer in answers.items():
        for place in server_paths(tmp_path):
            assert place not in answer.text, (what, answer.text)
    # Named relative to the data root instead, as a client names them in a spec.
    detail = {what: answer.json().get("detail", "") for what, answer in answers.items()}
    assert re.match(
        r"dataset\.path: cannot decode broken/test/cat/001\.png: cannot identify image file "
        r"'broken/test/cat/001\.png'$",
        detail["submit {'name': 'image_folder', 'path': 'broken'}"],
    )
    assert (
        "odd/train/dog/odd.png is 7x3" in detail["submit {'name': 'image_folder', 'path': 'odd'}"]
    )
    assert detail["submit {'name': 'cifar10'}"].endswith(
        "in cifar-10-batches-py under the data root"
    )
    assert detail["submit {'name': 'mnist'}"] == (
        "dataset.name: cannot read mnist from MNIST/raw under the data root: ValueError: "
        "train-images-idx3-ubyte is not an idx file of 3-dimensional uint8 values"
    )
    listed = {item["id"]: item for item in answers["/v1/datasets"].json()["data"]}
    assert listed["cifar10"]["location"] == "cifar-10-batches-py"
    assert listed["mnist"]["location"] == "MNIST/raw"
    assert listed["image_folder"]["location"] == "."


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_a_crashed_job_names_its_files_relative_to_the_home(
    client: httpx.Client, settings: Settings, tmp_path: Path
) -> None:
    job = {"dataset": {"name": "digits"}, "max_attempts": 1}  # fails for good: its stream ends
    job_id = client.post("/v1/jobs", json=job).json()["id"]
    # A file where the worker makes the job's folder: it crashes on a path of the home.
    (settings.artifacts_dir / "jobs").mkdir(parents=True)
    (settings.artifacts_dir / "jobs" / job_id).write_bytes(b"")
    worker = Worker(settings, device="cpu")
    try:
        assert worker.run_one()
    finally:
        worker.engine.dispose()
    for answer in (client.get(f"/v1/jobs/{job_id}"), client.get(f"/v1/jobs/{job_id}/events")):
        for place in server_paths(tmp_path):
            assert place not in answer.text, answer.text
    error = client.get(f"/v1/jobs/{job_id}").json()["error"]
    assert error.startswith("FileExistsError: ") and f"'artifacts/jobs/{job_id}'" in error, error


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_a_path_that_cannot_be_resolved_is_a_422_naming_it(
    client: httpx.Client, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "loop").symlink_to(data / "loop")
    write_images(data / "split_loop")
    shutil.rmtree(data / "split_loop" / "test")
    (data / "split_loop" / "test").symlink_to(data / "split_loop" / "test")
    write_images(data / "file_loop")
    (data / "file_loop" / "train" / "cat" / "009.png").symlink_to(data / "file_loop" / "x.png")
    (data / "file_loop" / "x.png").symlink_to(data / "file_loop" / "train" / "cat" / "009.png")
    cases = {
        "loop": "dataset.path: 'loop' is a link loop",
        "loop/deeper": "dataset.path: 'loop/deeper' is a link loop",
        "split_loop": "dataset.path: split_loop/test is a link loop",
        "file_loop": "dataset.path: file_loop/train/cat/009.png is a link loop",
        "x" * 5000: f"dataset.path: '{'x' * 5000}' cannot be looked up: File name too long",
    }
    for path, message in cases.items():
        for response in post_both(client, {"name": "image_folder", "path": path}):
            assert response.status_code == 422, (path[:20], response.text)
            assert response.json()["detail"] == message
