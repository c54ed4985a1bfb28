"""HTTP caching of a succeeded job's files (its model, card and plots): they never change
once the job has succeeded, so each answer carries a strong ETag and
`Cache-Control: private, max-age=<a year>, immutable`, and a GET with a matching
If-None-Match is a 304 that asks nothing of the artifact store.

The ETag is made from the job's id, its end time and the file's name, not from the
file's bytes: every API host gives the same one without reading the file, and a 304
costs one database read. `private`: the answers depend on the caller's API key, so a
shared cache must not keep them. A running job's files are never served (409).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Header, Response

from counterweight.service.store.models import Job

MAX_AGE_SECONDS = 365 * 24 * 3600
IMMUTABLE = f"private, max-age={MAX_AGE_SECONDS}, immutable"

IfNoneMatch = Annotated[
    str | None,
    Header(
        description="ETags of copies the client holds: a match is a 304 with no body.",
        max_length=8192,
    ),
]
_HEADERS = {
    "ETag": {"description": "The file's strong entity tag.", "schema": {"type": "string"}},
    "Cache-Control": {"description": IMMUTABLE, "schema": {"type": "string"}},
}


def responses(content: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """What a route that serves a job's file declares, besides its errors: its 200 (of
    `content`, else the route's model) and 304 carry the cache headers."""
    ok: dict[str, Any] = {"headers": _HEADERS}
    if content is not None:
        ok["content"] = content
    not_modified = "Not Modified: the copy whose ETag was sent in If-None-Match is current"
    return {200: ok, 304: {"description": not_modified, "headers": _HEADERS}}


def etag(job: Job, name: str) -> str:
    """A strong ETag, the same on every host, for one file of a succeeded job."""
    assert job.finished_at is not None
    ended = job.finished_at.replace(tzinfo=None).isoformat()  # stored as UTC, naive or not
    digest = hashlib.sha256(f"{job.id}/{ended}/{name}".encode()).hexdigest()[:32]
    return f'"{digest}"'


def headers(tag: str) -> dict[str, str]:
    return {"ETag": tag, "Cache-Control": IMMUTABLE}


def not_modified(if_none_match: str | None, tag: str) -> Response | None:
    """The 304 when If-None-Match names `tag` (weak or strong, RFC 9110: GET compares
    weakly) or is `*`; else None, and the file is served."""
    if if_none_match is None:
        return None
    sent = {candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")}
    if tag in sent or "*" in sent:
        return Response(status_code=304, headers=headers(tag))
    return None
