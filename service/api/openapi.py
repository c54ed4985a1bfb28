"""What /openapi.json says about auth and limits, which no single route declares.

The API key is enforced by one app-wide dependency (service.api.deps), and request
bodies are capped by a middleware (service.api.admission), so the generated schema would
show neither. This adds the bearer scheme and the 401 to every /v1 operation and
the 413 to every operation that takes a body: clients and schema-driven tests
(tests/integration/test_schemathesis.py) see the API as it behaves.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from counterweight.service.api.deps import V1_PREFIX

SCHEME = "apiKey"
BODY_METHODS = ("post", "put", "patch")
ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
        }
    }
}


# What a 422 really is (service.api.app): one message, and for a body or parameter that
# fails validation the list of fields at fault. FastAPI's default documents a list.
UNPROCESSABLE = {
    "type": "object",
    "title": "HTTPValidationError",
    "properties": {
        "detail": {"type": "string", "description": "What is wrong, naming the field."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["field", "msg", "type"],
            },
        },
    },
    "required": ["detail"],
}


# Every operation that reads a body can refuse it whole, before any route code runs.
BODY_ERRORS = {
    "400": "The body cannot be decoded (not UTF-8 JSON)",
    "413": "The body is larger than the limits",
    "422": "The body is not what this operation takes; `detail` says why",
}


def _amend(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    if "HTTPValidationError" in components.get("schemas", {}):
        components["schemas"]["HTTPValidationError"] = UNPROCESSABLE
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `counterweight keys create --tenant NAME`. Not needed "
        "while the service has no keys (open mode, loopback only).",
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if path == V1_PREFIX or path.startswith(V1_PREFIX + "/"):
                operation["security"] = [{SCHEME: []}]
                responses.setdefault(
                    "401",
                    {
                        "description": "No API key, or an unknown or revoked one",
                        "content": ERROR_BODY,
                    },
                )
            if method in BODY_METHODS:
                for status, description in BODY_ERRORS.items():
                    responses.setdefault(
                        status, {"description": description, "content": ERROR_BODY}
                    )


def document_security(app: FastAPI) -> None:
    """Make `app.openapi()` include the amendments (built once, on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _amend(generate())  # FastAPI keeps what it generated in app.openapi_schema
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
