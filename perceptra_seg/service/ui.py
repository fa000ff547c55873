"""``/ui``: the click-to-segment page, static files shipped in the package (no CDN, no build step).

The page (``perceptra_seg/service/static/ui/``: ``index.html``, ``ui.js``, ``rle.js``, ``ui.css``) opens an image
(file picker or drag and drop), sends it over the ``/v1/ws`` session API (:mod:`perceptra_seg.service.ws`) and draws
each object's mask from its COCO RLE. Everything it loads is same-origin; the response's Content-Security-Policy
says so, which also keeps the page from loading anything else should it ever be altered. The page needs no API key
to load; the WebSocket session asks for one (the page sends it as the first message).
"""

from __future__ import annotations

import importlib.resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["UI_ASSETS_PATH", "UI_PATH", "install_ui"]

UI_PATH = "/ui"
UI_ASSETS_PATH = "/ui/assets"
#: Same-origin only; ``blob:`` for the downloaded exports and the dropped image, ``ws:``/``wss:`` for /v1/ws.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def install_ui(app: FastAPI) -> None:
    """Add ``GET /ui`` and its assets (``/ui/assets/...``) to ``app``.

    Raises:
        FileNotFoundError: the packaged page is missing from the installation.
    """
    folder = importlib.resources.files("perceptra_seg.service").joinpath("static", "ui")
    page = folder.joinpath("index.html")
    if not page.is_file():
        raise FileNotFoundError(f"the packaged annotation page is missing from {folder}; reinstall perceptra-seg")
    html = page.read_text(encoding="utf-8")
    app.mount(UI_ASSETS_PATH, StaticFiles(directory=str(folder)), name="ui-assets")

    async def annotation_page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    app.add_api_route(UI_PATH, annotation_page, methods=["GET"], include_in_schema=False)
