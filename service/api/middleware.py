"""ASGI middleware of the API: the cap on request bodies (COUNTERWEIGHT_MAX_REQUEST_BYTES),
and URLs that hold a NUL character."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from counterweight.service.api.problems import problem

# Routes that stream their body and enforce their own cap (POST /v1/datasets:
# COUNTERWEIGHT_MAX_UPLOAD_BYTES), as (method, path).
STREAMED_ROUTES = frozenset({("POST", "/v1/datasets")})


def _too_large(cap: int) -> HTTPException:
    return HTTPException(
        413, f"request body: larger than {cap} bytes (COUNTERWEIGHT_MAX_REQUEST_BYTES)"
    )


class BodySizeLimit:
    """ASGI middleware: a body over `max_bytes` is a 413. A declared Content-Length is
    refused before a byte is read; a chunked body is counted as the app reads it, and
    the HTTPException raised mid-read reaches the app's handlers as any other."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in STREAMED_ROUTES:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            detail = _too_large(self.max_bytes).detail
            await problem(413, detail, instance=scope["path"])(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)


class NoNulInUrl:
    """ASGI middleware: a URL whose path or query holds a NUL character (%00) is refused
    before any route sees it. No id, name or cursor holds one, and Postgres cannot even
    compare a text value holding one: it would be a 500 at whichever query met it first.
    (A lone surrogate cannot reach a route: URLs are decoded with replacement characters.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            status, detail = 404, "no such resource: the URL path holds a NUL character (%00)"
        elif b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            status, detail = 422, "query: a parameter holds a NUL character (%00)"
        else:
            await self.app(scope, receive, send)
            return
        # No instance: the path is the problem, and a NUL has no place in an answer.
        await problem(status, detail)(scope, receive, send)
