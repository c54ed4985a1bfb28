"""/openapi.json is a document other services can generate clients from: short stable
operation ids, a typed schema for every JSON answer, binary schemas for files, and
every error declared as a problem details object. Read from the real app under a real
uvicorn; tests/acceptance/test_generated_client.py generates a client from it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from tests.conftest import ThreadedUvicorn

# What generated clients call their functions: changing one breaks every caller's code.
# New operations may be added; these stay as they are.
STABLE_IDS = {
    ("GET", "/healthz"): "healthz",
    ("GET", "/readyz"): "readyz",
    ("GET", "/metrics"): "metrics",
    ("POST", "/v1/jobs"): "submit_job",
    ("GET", "/v1/jobs"): "list_jobs",
    ("POST", "/v1/jobs/validate"): "validate_job",
    ("GET", "/v1/jobs/{job_id}"): "get_job",
    ("POST", "/v1/jobs/{job_id}/cancel"): "cancel_job",
    ("GET", "/v1/jobs/{job_id}/metrics"): "get_job_metrics",
    ("GET", "/v1/jobs/{job_id}/model"): "get_job_model",
    ("GET", "/v1/jobs/{job_id}/model/card"): "get_model_card",
    ("GET", "/v1/jobs/{job_id}/events"): "get_job_events",
    ("GET", "/v1/jobs/{job_id}/plots/{name}.png"): "get_job_plot",
    ("POST", "/v1/jobs/{job_id}/predict"): "predict",
    ("POST", "/v1/datasets"): "upload_dataset",
    ("GET", "/v1/datasets"): "list_datasets",
    ("GET", "/v1/datasets/{dataset_id}"): "get_dataset",
    ("POST", "/v1/sweeps"): "submit_sweep",
    ("GET", "/v1/sweeps/{sweep_id}"): "get_sweep",
    ("GET", "/v1/sweeps/{sweep_id}/plots/compare.png"): "get_sweep_plot",
    ("GET", "/v1/workers"): "list_workers",
    ("DELETE", "/v1/jobs/{job_id}"): "delete_job",
    ("GET", "/v1/jobs/{job_id}/logs"): "get_job_logs",
    ("GET", "/v1/jobs/{job_id}/deliveries"): "list_deliveries",
    ("GET", "/v1/sweeps"): "list_sweeps",
    ("POST", "/v1/sweeps/{sweep_id}/cancel"): "cancel_sweep",
    ("DELETE", "/v1/datasets/{dataset_id}"): "delete_dataset",
    ("POST", "/v1/webhooks"): "create_webhook",
    ("GET", "/v1/webhooks"): "list_webhooks",
    ("GET", "/v1/webhooks/{subscription_id}"): "get_webhook",
    ("POST", "/v1/webhooks/secret"): "create_webhook_secret",
    ("DELETE", "/v1/webhooks/{subscription_id}"): "delete_webhook",
}
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
MAX_ID_LENGTH = 32
# Objects meant to hold any JSON, each for a reason: a job spec as the client sent it
# (in listings an inline sample_weight is shown by its shape, which JobSpec would refuse),
# an arch's keyword arguments (they differ by arch), a sweep's grid and a cell's values, a webhook
# delivery's body as it was sent and signed (its shape: DESIGN.md section 3, "Webhooks").
FREE_FORM = {
    "DeliveryOut.body",
    "JobOut.spec",
    "CancelOut.spec",
    "ValidationReport.spec",
    "ModelCard.spec",
    "ModelCard.model_kwargs",
    "SweepRow.cell",
    "SweepSummary.grid",
}
IMMUTABLE = [
    "/v1/jobs/{job_id}/model",
    "/v1/jobs/{job_id}/model/card",
    "/v1/jobs/{job_id}/plots/{name}.png",
]
FILES = {
    ("GET", "/v1/jobs/{job_id}/model"): "application/octet-stream",
    ("GET", "/v1/jobs/{job_id}/plots/{name}.png"): "image/png",
    ("GET", "/v1/sweeps/{sweep_id}/plots/compare.png"): "image/png",
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home: Path = tmp_path_factory.mktemp("home")
    with ThreadedUvicorn(create_app(Settings(home=home))) as url:
        schema: dict[str, Any] = httpx.get(f"{url}/openapi.json").json()
        yield schema


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def test_operation_ids_are_short_unique_snake_case_and_stable(document: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for method, path, op in operations(document)}
    assert len(set(ids.values())) == len(ids), "two operations share an id"
    for key, operation_id in ids.items():
        assert SNAKE.match(operation_id) and len(operation_id) <= MAX_ID_LENGTH, (key, operation_id)
    assert {key: ids.get(key) for key in STABLE_IDS} == STABLE_IDS


def _untyped(
    schema: dict[str, Any], where: str, components: dict[str, Any], seen: set[str]
) -> Iterator[str]:
    """Where, under `schema`, an object or a value has no type: an object without
    properties that takes anything, or an empty schema."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            yield from _untyped(components[name], name, components, seen)
        return
    if where in FREE_FORM:
        return
    branches = [*schema.get("anyOf", []), *schema.get("oneOf", []), *schema.get("allOf", [])]
    for branch in branches:
        yield from _untyped(branch, where, components, seen)
    if branches or "enum" in schema or "const" in schema:
        return
    kind = schema.get("type")
    if kind is None:
        yield where
    elif kind == "array":
        yield from _untyped(schema.get("items", {}), f"{where}[]", components, seen)
    elif kind == "object":
        for name, member in schema.get("properties", {}).items():
            yield from _untyped(member, f"{where}.{name}", components, seen)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            yield from _untyped(extra, f"{where}{{}}", components, seen)
        elif not schema.get("properties"):
            yield where  # a bare object: a generated client gets a plain dict


def test_every_json_answer_is_typed_all_the_way_down(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    found: list[str] = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if media_type.split(";")[0].endswith("json"):
                    where = f"{method} {path} {status}"
                    found += _untyped(media.get("schema", {}), where, components, set())
    assert not found, f"untyped JSON in answers: {sorted(set(found))}"


def test_files_are_binary_and_text_is_a_string(document: dict[str, Any]) -> None:
    for (method, path), media_type in FILES.items():
        content = document["paths"][path][method.lower()]["responses"]["200"]["content"]
        assert content == {media_type: {"schema": {"type": "string", "format": "binary"}}}
    for path in IMMUTABLE:  # the cache headers and the 304 are declared
        responses = document["paths"][path]["get"]["responses"]
        for status in ("200", "304"):
            assert {"ETag", "Cache-Control"} <= set(responses[status]["headers"]), (path, status)
        parameters = document["paths"][path]["get"]["parameters"]
        assert "if-none-match" in [p["name"].lower() for p in parameters]
    for _, path, operation in operations(document):
        for media_type, media in operation["responses"].get("200", {}).get("content", {}).items():
            assert media.get("schema"), (path, media_type)


def test_every_error_is_declared_as_problem_details(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    validation = document["components"]["schemas"]["HTTPValidationError"]
    assert {"detail", "errors", "type", "status"} <= set(validation["properties"])
    for method, path, operation in operations(document):
        responses = operation["responses"]
        if path.startswith("/v1/"):
            assert {"401", "503"} <= set(responses), (method, path)
        for status, response in responses.items():
            if status[0] not in "45" or (path, status) == ("/readyz", "503"):
                continue
            expected = "HTTPValidationError" if status == "422" else "Problem"
            assert response["content"] == {
                "application/problem+json": {"schema": {"$ref": f"#/components/schemas/{expected}"}}
            }, (method, path, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (method, path, status)
