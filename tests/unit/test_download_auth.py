"""The Hugging Face token of gated downloads (issue 19): sent to the catalogue URL's origin only, never across a
redirect to another host or port, never logged; a 401 / 403 says how to get access. Two local HTTP servers on
127.0.0.1 stand in for huggingface.co and its CDN."""

from __future__ import annotations

import hashlib
import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from perceptra_seg import ModelLoadError
from perceptra_seg import weights as weights_module
from perceptra_seg.download_auth import hub_token
from perceptra_seg.registry import get_model_spec
from perceptra_seg.weights import download_checkpoint, resolve_checkpoint

TOKEN = "hf_not_a_real_token_1234"
BODY = b"gated checkpoint bytes" * 100
PREFIX = hashlib.sha256(BODY).hexdigest()[:6]


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers by path; records ``(path, Authorization header or None)`` of every request."""

    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    seen: ClassVar[list[tuple[str, str | None]]] = []
    need_token: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        type(self).seen.append((self.path, auth))
        headers: dict[str, str] = {}
        if self.path in self.need_token and auth != f"Bearer {TOKEN}":
            status, body = 401, b"gated"
        else:
            status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _start() -> tuple[str, type[_Recorder], http.server.ThreadingHTTPServer]:
    handler = type("Handler", (_Recorder,), {"routes": {}, "seen": [], "need_token": set()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", handler, httpd


@pytest.fixture
def hub_and_cdn() -> Iterator[tuple[str, type[_Recorder], str, type[_Recorder]]]:
    """``(hub_url, hub_handler, cdn_url, cdn_handler)``: the hub needs the token on ``/gated.pt`` and redirects it to
    the CDN (another port, so another origin); ``/moved.pt`` redirects within the hub."""
    hub, hub_handler, hub_httpd = _start()
    cdn, cdn_handler, cdn_httpd = _start()
    hub_handler.need_token.add("/gated.pt")
    hub_handler.routes["/gated.pt"] = (302, {"Location": f"{cdn}/signed/blob?sig=abc"}, b"")
    hub_handler.routes["/moved.pt"] = (302, {"Location": "/gated.pt"}, b"")
    cdn_handler.routes["/signed/blob?sig=abc"] = (200, {}, BODY)
    yield hub, hub_handler, cdn, cdn_handler
    for httpd in (hub_httpd, cdn_httpd):
        httpd.shutdown()
        httpd.server_close()


def test_token_goes_to_the_catalogue_origin_only_never_across_a_redirect(
    tmp_path: Path, hub_and_cdn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hub, hub_handler, _, cdn_handler = hub_and_cdn
    target = tmp_path / "gated.pt"
    with caplog.at_level(logging.DEBUG):
        download_checkpoint(f"{hub}/moved.pt", target, sha256_prefix=PREFIX, timeout_s=5, token=TOKEN)
    assert target.read_bytes() == BODY
    # same-origin redirect keeps the header; the redirect to the CDN (another port) drops it
    assert hub_handler.seen == [("/moved.pt", f"Bearer {TOKEN}"), ("/gated.pt", f"Bearer {TOKEN}")]
    assert cdn_handler.seen == [("/signed/blob?sig=abc", None)]
    assert TOKEN not in caplog.text


def test_no_token_no_header_and_a_401_says_how_to_get_access(tmp_path: Path, hub_and_cdn: Any) -> None:
    hub, hub_handler, _, cdn_handler = hub_and_cdn
    with pytest.raises(ModelLoadError, match=r"HTTP 401.*accept the model's licence.*set HF_TOKEN") as caught:
        download_checkpoint(f"{hub}/gated.pt", tmp_path / "gated.pt", sha256_prefix=PREFIX, timeout_s=5)
    assert hub_handler.seen == [("/gated.pt", None)] and cdn_handler.seen == []
    assert list(tmp_path.iterdir()) == []  # nothing cached
    with pytest.raises(ModelLoadError, match="a token was sent but not accepted") as refused:
        download_checkpoint(
            f"{hub}/gated.pt", tmp_path / "gated.pt", sha256_prefix=PREFIX, timeout_s=5, token="hf_wrong"
        )
    assert "hf_wrong" not in str(refused.value) and "hf_wrong" not in str(caught.value)


def test_refusal_names_the_hub_model_page() -> None:
    from perceptra_seg.download_auth import refused_download_message

    message = refused_download_message(get_model_spec("sam3").url, 403, token_sent=False)
    assert "HTTP 403" in message and "licence at https://huggingface.co/facebook/sam3," in message


def test_hub_token_prefers_the_environment_then_huggingface_hubs_store(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_stored")
    monkeypatch.setenv("HF_TOKEN", " hf_env ")
    assert hub_token() == "hf_env"
    monkeypatch.delenv("HF_TOKEN")
    assert hub_token() == "hf_stored"
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert hub_token() is None


def test_resolve_sends_the_token_to_the_catalogue_hub_url_but_never_to_a_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    calls: list[tuple[str, str | None]] = []

    def fake_download(url: str, target: Path, **kwargs: Any) -> Path:
        calls.append((url, kwargs["token"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
        return target

    monkeypatch.setattr(weights_module, "download_checkpoint", fake_download)
    spec = get_model_spec("sam3")
    resolve_checkpoint(spec, None, cache_dir=tmp_path / "a")
    resolve_checkpoint(spec, None, cache_dir=tmp_path / "b", download_base_url="http://127.0.0.1:9/mirror")
    resolve_checkpoint(get_model_spec("sam_v1", "vit_b"), None, cache_dir=tmp_path / "c")
    assert calls == [
        (spec.url, TOKEN),
        ("http://127.0.0.1:9/mirror/sam3.pt", None),
        (get_model_spec("sam_v1", "vit_b").url, None),
    ]
