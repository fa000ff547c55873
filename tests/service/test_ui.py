"""``/ui`` is served from the package, references only same-origin files, and keys are not needed to load it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from perceptra_seg.service import create_app

from .helpers import KEY_A, FakeBackend, build_config, running

_TYPES = {".js": "javascript", ".css": "text/css"}


def test_ui_page_and_its_assets_are_packaged_and_same_origin(fake_client: Callable[..., Any]) -> None:
    with fake_client() as client:
        page = client.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self' ws: wss:" in policy
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert sorted(urls) == ["/ui/assets/rle.js", "/ui/assets/ui.css", "/ui/assets/ui.js"]
        texts = [page.text]
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, url
            assert _TYPES[url[url.rfind(".") :]] in response.headers["content-type"]
            texts.append(response.text)
        assert client.get("/ui/assets/../ui.py").status_code == 404
        assert "/ui" not in str(client.get("/openapi.json").json()["paths"])
    for text in texts:  # nothing from another origin: no absolute URLs at all
        assert not re.search(r"https?://", text), text[:200]
    assert "/v1/ws" in texts[urls.index("/ui/assets/ui.js") + 1]


def test_shortcuts_are_listed_on_the_page(fake_client: Callable[..., Any]) -> None:
    with fake_client() as client:
        page = client.get("/ui").text
    for shortcut in (
        "left click",
        "right click",
        "drag",
        "<kbd>N</kbd>",
        "<kbd>U</kbd>",
        "<kbd>Delete</kbd>",
        "<kbd>R</kbd>",
        "<kbd>E</kbd>",
        "<kbd>P</kbd>",
    ):
        assert shortcut in page


def test_ui_loads_without_a_key_while_inference_needs_one() -> None:
    app = create_app(build_config(server={"api_keys": [KEY_A]}), backend=FakeBackend())
    with running(app) as client:
        assert client.get("/ui").status_code == 200
        assert client.get("/ui/assets/ui.js").status_code == 200
        assert client.post("/v1/embed", json={"image": "x"}).status_code == 401
