"""What a 405 and a cursor say agree with /openapi.json: `Allow` lists every method the
path takes, whichever route serves it, and the schema declares what a cursor must be.
Real app under a real uvicorn on a real database."""

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

# Routes outside the schema (the documentation), and what Starlette lets them take.
# /docs is Swagger UI on vendored files (service.api.ui.docs): no /redoc, no OAuth redirect.
UNDOCUMENTED = {"/openapi.json", "/docs"}


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def methods_by_path(schema: dict[str, Any]) -> dict[str, set[str]]:
    return {
        path: {method.upper() for method in operations}
        for path, operations in schema["paths"].items()
    }


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


def allow(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_every_405_lists_every_method_of_its_path(client: httpx.Client) -> None:
    options = client.options("/v1/datasets")
    assert (options.status_code, allow(options)) == (405, {"GET", "POST"})
    assert options.json()["detail"] == "Method Not Allowed"

    documented = methods_by_path(client.get("/openapi.json").json())
    paths = {concrete(template) for template in documented} | UNDOCUMENTED
    for path in sorted(paths):
        # What the schema says each path takes: the union over every template it matches
        # (/v1/jobs/validate is also a /v1/jobs/{job_id}).
        expected: set[str] = set()
        for template, methods in documented.items():
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
                expected |= methods
        if path in UNDOCUMENTED:
            expected = {"GET", "HEAD"}
        for method in ("OPTIONS", "PUT"):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert allow(response) == expected, (method, path)
    assert allow(client.delete("/healthz")) == {"GET"}


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_an_empty_cursor_is_refused_as_the_schema_says(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    cursors = [
        (path, parameter["schema"])
        for path, operations in schema["paths"].items()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "cursor"
    ]
    assert [path for path, _ in cursors] == ["/v1/jobs", "/v1/sweeps"]
    for _, declared in cursors:
        (string,) = (s for s in declared["anyOf"] if s.get("type") == "string")
        assert string["minLength"] == 1

    for path, _ in cursors:
        empty = client.get(path, params={"cursor": ""})
        assert empty.status_code == 422
        assert empty.json()["detail"] == "cursor: String should have at least 1 character"
        assert client.get(path).status_code == 200  # no cursor: the first page
        garbage = client.get(path, params={"cursor": "x"})
        assert garbage.status_code == 422 and garbage.json()["detail"].startswith("cursor ")
