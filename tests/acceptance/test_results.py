"""Plots and predictions of a job trained by a real worker, served by the real API."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from counterweight.service.data.splits import load_splits
from counterweight.service.spec import JobSpec
from counterweight.workers.plots import FIGURE_SIZE_PX
from tests.processes import Service

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def upload_digits_as_uint8_images(service: Service) -> str:
    """Digits as 8x8 grey uint8 images (pixel * 255 / 16, rounded). A uint8 pixel k
    means k / 255 to the model, which a grey PNG carries exactly: so the same image
    as nested lists and as a PNG must give the very same prediction."""
    digits = load_digits()
    x = np.rint(digits.images * 255 / 16).astype(np.uint8)
    y = digits.target.astype(np.int64)
    buffer = io.BytesIO()
    np.savez(
        buffer, x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:],
        class_names=np.array([f"digit {d}" for d in range(10)]),
    )  # fmt: skip
    response = service.http.post("/v1/datasets", files={"file": ("digits.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def predict(service: Service, job_id: str, inputs: list[Any]) -> list[dict[str, Any]]:
    response = service.http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def test_plots_and_predictions_of_a_job_trained_by_a_worker(service: Service) -> None:
    dataset_id = upload_digits_as_uint8_images(service)
    job_id = service.submit(
        {
            "dataset": {"name": "uploaded", "id": dataset_id},
            "model": {"arch": "mlp", "width": 32},
            "train": {"epochs": 3, "lr": 0.01},
        }
    )
    # Before the job has succeeded there is nothing to plot or to predict with.
    assert service.http.get(f"/v1/jobs/{job_id}/plots/curves.png").status_code == 409
    early = service.http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": [[0.0]]})
    assert early.status_code == 409 and "queued" in early.json()["detail"]

    service.start_worker()
    assert service.wait_until_ended(job_id)["status"] == "succeeded"
    metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()
    assert metrics["plots"] == ["curves", "recall", "confusion"]

    for name in metrics["plots"]:
        response = service.http.get(f"/v1/jobs/{job_id}/plots/{name}.png")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.size == FIGURE_SIZE_PX
    unknown = service.http.get(f"/v1/jobs/{job_id}/plots/card.png")
    assert unknown.status_code == 404
    assert "available plots: curves, recall, confusion" in unknown.json()["detail"]

    # The whole test split, as nested lists in the card's input shape, reproduces the
    # test accuracy the worker reported.
    card = service.http.get(f"/v1/jobs/{job_id}/model/card").json()
    assert card["input_shape"] == [1, 8, 8]
    splits = load_splits(JobSpec.model_validate(card["spec"]), service.home, service.home)
    as_lists = (splits.x_test.astype(np.float64) / 255).tolist()
    predictions = predict(service, job_id, as_lists)
    predicted = np.array([p["class"] for p in predictions])
    assert float(np.mean(predicted == splits.y_test)) == metrics["final"]["accuracy"]
    assert all(p["name"] == f"digit {p['class']}" for p in predictions)
    assert all(len(p["probabilities"]) == 10 for p in predictions)
    assert abs(sum(predictions[0]["probabilities"]) - 1) < 1e-5

    # The same images as base64 PNGs: the very same predictions and probabilities.
    first = slice(0, 25)
    as_pngs = [png_base64(image[0]) for image in splits.x_test[first]]
    assert predict(service, job_id, as_pngs) == predict(service, job_id, as_lists[first])

    check_bad_inputs_are_4xx_naming_the_input_and_the_expectation(service, job_id)


def check_bad_inputs_are_4xx_naming_the_input_and_the_expectation(
    service: Service, job_id: str
) -> None:
    url = f"/v1/jobs/{job_id}/predict"
    good = np.zeros((1, 8, 8)).tolist()

    def refused(inputs: list[Any], status: int = 422) -> str:
        response = service.http.post(url, json={"inputs": inputs})
        assert response.status_code == status, response.text
        detail: str = response.json()["detail"]
        return detail

    assert "inputs[1]: expected shape (1, 8, 8), got (8, 8)" in refused([good, good[0]])
    assert "expected shape (1, 8, 8)" in refused([good, [[0.0] * 8] * 7 + [[0.0] * 3]])
    assert "inputs[0]: values must be numbers" in refused([[[["0.5"] * 8] * 8]])
    assert "inputs[0]: image values must be in [0, 1]" in refused([[[[255.0] * 8] * 8]])
    assert "inputs[0]: not valid base64" in refused(["not base64!"])
    not_an_image = base64.b64encode(b"GIF89a plus nothing").decode()
    assert "inputs[0]: not a readable PNG or JPEG" in refused([not_an_image])
    too_big = png_base64(np.zeros((9, 8), dtype=np.uint8))
    assert "image is 8x9 (width x height); this model takes 8x8" in refused([too_big])
    assert "at most 1024 per request" in refused([good] * 1025, status=413)
    assert "at least one input" in refused([])
    # NaN is not JSON, but Python's parser reads it: it must be refused, not predicted.
    row = b"[" + b",".join([b"0.5"] * 7 + [b"NaN"]) + b"]"
    nan = service.http.post(
        url, content=b'{"inputs": [[[' + b",".join([row] * 8) + b"]]]}",
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert nan.status_code == 422
    assert "inputs[0]: values must be finite" in nan.json()["detail"]
    missing = service.http.post("/v1/jobs/nosuchjob/predict", json={"inputs": [good]})
    assert missing.status_code == 404
    assert len(predict(service, job_id, [good, good])) == 2
