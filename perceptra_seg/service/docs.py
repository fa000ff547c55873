"""``/docs``: Swagger UI served from the package, so the page works without network access.

FastAPI's built-in ``/docs`` loads Swagger UI's JavaScript and CSS from a CDN: offline, or behind a firewall, the
page stays blank. Here the same page is built with ``get_swagger_ui_html`` but points at Swagger UI 5's files
shipped in ``perceptra_seg/service/static/swagger-ui/`` (see VERSION.md there), served at ``/docs/assets/``.
Every URL the page references is same-origin. ReDoc has no packaged copy and is not served (``/redoc`` is 404).
"""

from __future__ import annotations

import importlib.resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "DOCS_PATH", "install_docs"]

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI, *, openapi_url: str = "/openapi.json") -> None:
    """Add ``GET /docs`` (Swagger UI for ``openapi_url``) and its static assets to ``app``; both need no API key.

    Raises:
        FileNotFoundError: the packaged Swagger UI files are missing from the installation.
    """
    folder = importlib.resources.files("perceptra_seg.service").joinpath("static", "swagger-ui")
    if not folder.joinpath("swagger-ui-bundle.js").is_file():
        raise FileNotFoundError(f"the packaged Swagger UI is missing from {folder}; reinstall perceptra-seg")
    app.mount(ASSETS_PATH, StaticFiles(directory=str(folder)), name="swagger-ui-assets")

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

    app.add_api_route(DOCS_PATH, swagger_ui, methods=["GET"], include_in_schema=False)
