"""Mount the dashboard and the offline docs on the app (service.api.app.create_app)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from counterweight.service.api.ui import data, docs, pages
from counterweight.service.api.ui.session import (
    UI_PREFIX,
    LoginRequired,
    SecurityHeaders,
    login_redirect,
)

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(LoginRequired, login_redirect)
    app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(docs.router)
    app.include_router(pages.router)
    app.include_router(data.router)
