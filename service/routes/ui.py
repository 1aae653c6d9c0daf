"""The page at ``/`` (service/static/ui: plain HTML, CSS and JS, no build step, nothing from a
CDN), and Swagger UI at ``/docs`` from assets served here too, so both work offline.

The page calls the public API like any client; with an API key configured it asks for the key
and sends it. ``MNIST_AE_UI=false`` leaves the page out; /docs stays.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, HTMLResponse

UI_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"
# Swagger UI 5's bundle and styles, as the fastapi-offline package ships them
DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
# the page loads only its own files and talks only to this service
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)

page_router = APIRouter(include_in_schema=False)
docs_router = APIRouter(include_in_schema=False)


@page_router.get("/")
async def page() -> FileResponse:
    return FileResponse(
        UI_DIR / "index.html", headers={"content-security-policy": PAGE_POLICY, "x-content-type-options": "nosniff"}
    )


@docs_router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    app: FastAPI = request.app
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - API docs",
        swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs-assets/favicon.png",
    )


def install(app: FastAPI, *, with_page: bool) -> None:
    """Mount /docs (always) and the page (unless switched off) on ``app``."""
    app.include_router(docs_router)
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    if with_page:
        app.include_router(page_router)
        app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
