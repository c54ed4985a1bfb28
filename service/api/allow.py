"""405 Method Not Allowed with the whole truth in `Allow`.

Starlette answers a method a route does not take with that one route's methods, and
a path served by two routes (GET and POST /v1/datasets are two functions) then lists
only the first: `OPTIONS /v1/datasets` said `Allow: POST`. The app's handler of HTTP
errors (service.api.app) lists every method of every route whose path matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from starlette.routing import BaseRoute, compile_path

# Newer FastAPI keeps an included router as one nested route and flattens them with
# iter_route_contexts; older ones copy every route into app.routes, already flat.
_flatten: Any = getattr(fastapi.routing, "iter_route_contexts", iter)


def _routes(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, set[str]]]:
    for route in _flatten(list(routes)):
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods:
            yield path, methods


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    """Every method some route of `app` answers on `path` (a request's path)."""
    allowed: set[str] = set()
    for template, methods in _routes(app.routes):
        regex, _, _ = compile_path(template)
        if regex.match(path):
            allowed |= methods
    return allowed


def full_allow(request: Request, found: str) -> str:
    """A 405's `Allow`: every method of every route matching the request's path, with
    `found`, Starlette's own list for the route it matched (right for that route)."""
    path, root = request.scope["path"], request.scope.get("root_path", "")
    # Routes match the path below the app's root path, as Starlette's router does.
    allowed = allowed_methods(request.app, path.removeprefix(root) if root else path)
    allowed |= {m.strip() for m in found.split(",") if m.strip()}
    return ", ".join(sorted(allowed))
