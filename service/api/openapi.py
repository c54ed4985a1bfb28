"""/openapi.json as the API behaves, for clients generated from it (openapi-python-client,
tests/acceptance/test_generated_client.py) and schema-driven tests
(tests/integration/test_schemathesis.py).

- Each operation's id is its route function's name (`submit_job`, `get_job`): short,
  stable, and what generated functions are called (operation_id, set in create_app).
- The API key is enforced by one app-wide dependency (service.api.deps) and request
  bodies are capped by a middleware (service.api.middleware), so the generated schema
  would show neither: this adds the bearer scheme and the 401 to every /v1 operation,
  and 400/413/422 to every operation that takes a body.
- Every error answer is a problem details object (service.api.problems): each 4xx and
  5xx response without a schema of its own gets `Problem` (422: `HTTPValidationError`,
  the problem with `errors`) as application/problem+json, and each 429 and 503 the
  Retry-After header. Every /v1 operation may answer 503 (the database unavailable).
- Files (a PNG, safetensors weights) are binary strings; other text is a string.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from counterweight.service.api.deps import V1_PREFIX
from counterweight.service.api.problems import PROBLEM_JSON

SCHEME = "apiKey"
BODY_METHODS = ("post", "put", "patch")
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
VALIDATION_REF = {"$ref": "#/components/schemas/HTTPValidationError"}
BINARY = {"type": "string", "format": "binary"}
TEXT = {"type": "string"}

_PROBLEM_MEMBERS: dict[str, Any] = {
    "type": {
        "type": "string",
        "description": "`about:blank` (an HTTP error: `title` is the status's reason phrase) "
        "or `urn:counterweight:problem:<kind>`, e.g. `urn:counterweight:problem:queue-full`.",
    },
    "title": {"type": "string", "description": "The kind of problem, in a few words."},
    "status": {"type": "integer", "description": "The HTTP status code."},
    "detail": {
        "type": "string",
        "description": "What is wrong in this request, naming the field or object at fault.",
    },
    "instance": {"type": "string", "description": "The path of the request."},
}
PROBLEM: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "An error, as RFC 9457 problem details (application/problem+json).",
    "properties": _PROBLEM_MEMBERS,
    "required": ["type", "title", "status", "detail"],
}
# What a 422 really is (service.api.app): the problem, and for a body or parameter that
# fails validation the list of fields at fault. FastAPI's default documents a list.
UNPROCESSABLE: dict[str, Any] = {
    "type": "object",
    "title": "HTTPValidationError",
    "description": "A request that is not valid: the problem, and for a body or parameter "
    "that fails validation, `errors`, the fields at fault.",
    "properties": {
        **_PROBLEM_MEMBERS,
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "title": "FieldError",
                "properties": {
                    "field": {"type": "string", "description": "e.g. `train.epochs`"},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["field", "msg", "type"],
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}

# Every operation that reads a body can refuse it whole, before any route code runs.
BODY_ERRORS = {
    "400": "The body cannot be decoded (not UTF-8 JSON)",
    "413": "The body is larger than the limits",
    "422": "The body is not what this operation takes; `detail` says why",
}
V1_ERRORS = {
    "401": "No API key, or an unknown or revoked one",
    "503": "The database is unavailable (or the artifact store, for what needs it); "
    "Retry-After says when to try again",
}


def operation_id(route: APIRoute) -> str:
    """The route function's name: routes are named for what they do (`list_jobs`)."""
    return route.name


def _error_content(status: str) -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": VALIDATION_REF if status == "422" else PROBLEM_REF}}


def _has_schema(response: dict[str, Any]) -> bool:
    """Whether a response declares a body of its own (readyz's 503 is its Health)."""
    for media in response.get("content", {}).values():
        schema = media.get("schema")
        if schema and schema != VALIDATION_REF:
            return True
    return False


def _amend_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    errors: dict[str, str] = {}
    if path == V1_PREFIX or path.startswith(V1_PREFIX + "/"):
        operation["security"] = [{SCHEME: []}]
        errors.update(V1_ERRORS)
    if method in BODY_METHODS:
        errors.update(BODY_ERRORS)
    for status, description in errors.items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        if status[:1] in ("4", "5"):
            if not _has_schema(response):
                response["content"] = _error_content(status)
            if status in ("429", "503"):
                response.setdefault("headers", {}).update(RETRY_AFTER)
        elif status[:1] == "2":
            for media_type, media in response.get("content", {}).items():
                if not media.get("schema"):  # a file or text FastAPI knows nothing of
                    media["schema"] = TEXT if media_type.startswith("text/") else BINARY


def _amend(schema: dict[str, Any]) -> None:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM
    schemas["HTTPValidationError"] = UNPROCESSABLE
    schemas.pop("ValidationError", None)  # FastAPI's item of its 422 list, unused now
    schema["components"].setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `counterweight keys create --tenant NAME`. Not needed "
        "while the service has no keys (open mode, loopback only).",
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _amend_operation(path, method, operation)


def document_security(app: FastAPI) -> None:
    """Make `app.openapi()` include the amendments (built once, on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _amend(generate())  # FastAPI keeps what it generated in app.openapi_schema
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
