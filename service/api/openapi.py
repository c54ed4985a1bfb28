"""What /openapi.json says about auth and limits, which no single route declares.

The API key is enforced by one app-wide dependency (service.api.deps), and request
bodies are capped by a middleware (service.limits), so the generated schema would
show neither. This adds the bearer scheme and the 401 to every /v1 operation and
the 413 to every operation that takes a body: clients and schema-driven tests
(tests/integration/test_schemathesis.py) see the API as it behaves.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.api.deps import V1_PREFIX

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


def _amend(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME] = {
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
                responses.setdefault(
                    "413",
                    {"description": "The body is larger than the limits", "content": ERROR_BODY},
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
