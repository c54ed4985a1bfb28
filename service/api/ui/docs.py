"""/docs with Swagger UI's files served from the package (static/vendor/swagger-ui):
FastAPI's default page loads them from a CDN, and is blank on a machine without internet.
There is no /redoc: it would need a second vendored bundle for the same document."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from counterweight.service.api.ui.session import UI_PREFIX

SWAGGER = f"{UI_PREFIX}/static/vendor/swagger-ui"
router = APIRouter(include_in_schema=False)


@router.api_route("/docs", methods=["GET", "HEAD"])
def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
    )
