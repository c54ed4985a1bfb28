"""Every error answer as an RFC 9457 problem details object (`application/problem+json`).

The body keeps what clients read before problem details existed, `detail` (one message
naming the field or object at fault) and, for a request that fails validation, `errors`
(the fields at fault), and adds the standard members:

- `type`: `about:blank` for what HTTP itself says (a path or method the API does not
  have, a missing API key: `title` is then the status's reason phrase), or
  `urn:counterweight:problem:<kind>` for a domain error, `<kind>` being its class in
  service.errors, in kebab case (`queue-full`, `job-state-conflict`), and `title` that
  class's name in words. Clients may branch on `type`; it never changes for a kind.
- `title`, `status` (the HTTP status, repeated), `detail`, `instance` (the path asked).

Every 429 and 503 carries `Retry-After` (seconds): the refusal's own wait where it knows
one (the artifact store's), else RETRY_AFTER_SECONDS.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from counterweight.service.store.engine import dumps_json

PROBLEM_JSON = "application/problem+json"
BLANK = "about:blank"
TYPE_PREFIX = "urn:counterweight:problem:"
# Seconds to wait before trying again, where the refusal does not know better: a full
# queue drains as jobs finish (tens of seconds at best); a database that refuses writes
# needs an operator, and retrying every few seconds costs it nothing.
RETRY_AFTER_SECONDS = {429: 30, 503: 5}


class ProblemResponse(JSONResponse):
    """application/problem+json, rendered as the API's other answers are (NaN as null,
    ASCII with escapes), so that an echoed value can never make an error a 500."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return dumps_json(content).encode("ascii")


def kind_of(error_class: type[Exception]) -> str:
    """`QueueFull` -> `queue-full`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", error_class.__name__).lower()


def title_of(error_class: type[Exception]) -> str:
    """`QueueFull` -> `Queue full`."""
    return kind_of(error_class).replace("-", " ").capitalize()


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    kind: type[Exception] | None = None,
    headers: dict[str, str] | None = None,
    retry_after: int | None = None,
    **members: Any,
) -> ProblemResponse:
    """The problem details answer. `kind`: the domain error class that decides `type`
    and `title` (None: about:blank and the status's reason phrase). `members` are
    extension members (`errors`)."""
    body: dict[str, Any] = {
        "type": BLANK if kind is None else TYPE_PREFIX + kind_of(kind),
        "title": _phrase(status) if kind is None else title_of(kind),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(members)
    headers = dict(headers or {})
    if status in RETRY_AFTER_SECONDS and "retry-after" not in {h.lower() for h in headers}:
        headers["Retry-After"] = str(retry_after or RETRY_AFTER_SECONDS[status])
    return ProblemResponse(body, status_code=status, headers=headers)


def instance_of(request: Request) -> str:
    """The `instance` of a request's problem: the path it asked for."""
    return request.url.path


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
