"""Who is looking at the dashboard, and what keeps other sites out.

The API key is typed once on /ui/login and kept in a cookie the page's scripts cannot read
(HttpOnly), that the browser never sends with a request another site starts
(SameSite=Strict), and only over HTTPS when the page came over HTTPS (Secure). It never
appears in a URL. Each request authenticates it exactly as `Authorization: Bearer` on
/v1 (service.api.deps.authenticate): same cache, same tenants, revocation within
COUNTERWEIGHT_AUTH_CACHE_SECONDS.

A request that changes something (log in, submit, cancel) must also come from the
dashboard's own origin (its Origin header, which browsers send with every POST), so
even a browser that ignores SameSite cannot be made to submit or cancel by another site.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from counterweight.service.api.auth import Principal
from counterweight.service.api.deps import authenticate

COOKIE = "counterweight_key"
UI_PREFIX = "/ui"
# No inline script or style attribute anywhere under /ui; everything from this origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class LoginRequired(Exception):
    """A page asked for without a usable key: the app answers with the login page."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


async def _principal(request: Request, *, page: bool) -> Principal:
    try:
        return await authenticate(request, request.cookies.get(COOKIE) or None)
    except HTTPException as refused:
        if page and refused.status_code == 401:
            raise LoginRequired(request.url.path) from refused
        raise


async def page_principal(request: Request) -> Principal:
    """The caller of a page; without a live key (once keys exist), a redirect to login."""
    return await _principal(request, page=True)


async def data_principal(request: Request) -> Principal:
    """The caller of a fragment or of JSON for a chart; without a live key, 401."""
    return await _principal(request, page=False)


def same_origin(request: Request) -> None:
    """403 unless a state-changing request comes from this very origin."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own:
        raise HTTPException(403, f"cross-site request refused: Origin {origin!r} is not {own}")


PagePrincipal = Annotated[Principal, Depends(page_principal)]
DataPrincipal = Annotated[Principal, Depends(data_principal)]
SameOrigin = Depends(same_origin)


def login_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    target = f"{UI_PREFIX}/login?next={quote(exc.next_path, safe='/')}"
    return Response(status_code=303, headers={"Location": target})


def set_key_cookie(response: Response, request: Request, key: str) -> None:
    response.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=UI_PREFIX,
    )


class SecurityHeaders:
    """The CSP and friends on every /ui answer (pages, fragments, JSON, static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == UI_PREFIX or path.startswith(UI_PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
                if not path.startswith(UI_PREFIX + "/static/"):
                    headers.append((b"cache-control", b"no-store"))  # pages show a tenant's jobs
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
