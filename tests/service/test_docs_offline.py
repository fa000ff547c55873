"""``/docs`` works offline: Swagger UI's page and every asset it references come from the service itself."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx

from perceptra_seg.service import create_app

from .helpers import KEY_A, FakeBackend, build_config, free_port, live_server

_EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def test_docs_page_and_its_assets_are_same_origin_and_served() -> None:
    config = build_config(server={"port": free_port(), "api_keys": [KEY_A]})  # docs stay public with keys set
    with live_server(create_app(config, backend=FakeBackend()), config) as base, httpx.Client(timeout=10) as client:
        page = client.get(f"{base}/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        references = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""", page.text)
        urls = [a or b for a, b in references]
        assert len(urls) == 4  # stylesheet, favicon, script, OpenAPI document
        for url in urls:
            absolute = urljoin(f"{base}/docs", url)
            assert urlsplit(absolute).netloc == urlsplit(base).netloc, f"{url} is not same-origin"
            response = client.get(absolute)
            assert response.status_code == 200, url
            suffix = url[url.rfind(".") :]
            if suffix in _EXPECTED_TYPES:
                assert _EXPECTED_TYPES[suffix] in response.headers["content-type"], (url, response.headers)
            else:
                assert response.json()["openapi"].startswith("3.1")  # what the packaged Swagger UI 5 renders
        bundle = client.get(f"{base}/docs/assets/swagger-ui-bundle.js").text
        assert len(bundle) > 500_000 and "SwaggerUIBundle" in bundle
        assert client.get(f"{base}/redoc").status_code == 404  # no packaged ReDoc: not served
        assert client.get(f"{base}/docs/assets/../app.py").status_code == 404
    assert not any(host in page.text for host in ("cdn.", "jsdelivr", "unpkg", "tiangolo"))
