"""Image URLs: malformed ones are 400 (F2), and a slow image server never holds an inference slot (F3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.service import create_app
from perceptra_seg.service.url_fetch import parse_image_url
from perceptra_seg.utils import image_decode
from tests.trickle import TrickleServer

from .helpers import MALFORMED_URLS, FakeBackend, b64_png, build_config, png_bytes, running, server_process


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_parse_image_url_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid image URL"):
        parse_image_url(url)


@pytest.mark.parametrize("allow_urls", [True, False])
def test_malformed_urls_are_400_on_every_endpoint(allow_urls: bool) -> None:
    """F2: urlsplit's ValueError used to escape as a 500 internal_error."""
    backend = FakeBackend()
    with running(create_app(build_config(input={"allow_urls": allow_urls}), backend=backend)) as client:
        for url in MALFORMED_URLS:
            for path, extra in (
                ("/v1/embed", {}),
                ("/v1/segment/box", {"box": [1, 1, 5, 5]}),
                ("/v1/segment", {"boxes": [[1, 1, 5, 5]]}),
            ):
                response = client.post(path, json={"image": url, **extra})
                assert response.status_code == 400, (url, path, response.text)
                error = response.json()["error"]
                assert error["code"] == "invalid_input" and "invalid image URL" in error["message"]
    assert backend.encode_calls == 1  # the warm-up only


def test_a_url_with_leading_blanks_is_fetched_like_any_other() -> None:
    """is_url looked at the first 9 characters only: with 3 or more leading blanks an allowed URL was refused as
    "URL image sources are disabled" (the SDK strips blanks before it decides)."""
    from perceptra_seg.utils.image_io import is_url

    assert is_url("   \n http://example.com/a.png") and is_url("HTTPS://example.com/a.png")
    assert not is_url("  iVBORw0KGgo=") and not is_url("data:image/png;base64,AAAA")
    backend = FakeBackend()
    with running(create_app(build_config(input={"allow_urls": True}), backend=backend)) as client:
        response = client.post("/v1/embed", json={"image": "     http://[::1"})
        assert response.status_code == 400 and "invalid image URL" in response.json()["error"]["message"], response.text


def _url_server_sections(**server: Any) -> dict[str, Any]:
    return {
        "input": {"allow_urls": True, "url_timeout_s": 10.0},
        "server": {
            "url_allowed_networks": ["127.0.0.1/32"],
            "max_concurrency": 1,
            "max_queue": 0,
            "url_fetch_timeout_s": 2.0,
            **server,
        },
    }


@contextmanager
def _posting(base: str, url: str) -> Iterator[dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def post() -> None:
        start = time.monotonic()
        response = httpx.post(base + "/v1/segment/box", json={"image": url, "box": [1, 1, 5, 5]}, timeout=60)
        outcome.update(status=response.status_code, body=response.json(), seconds=time.monotonic() - start)

    thread = threading.Thread(target=post)
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(timeout=60)


def test_a_trickling_url_never_holds_the_inference_slot() -> None:
    """F3: a header byte every 0.5 s used to keep the only slot (max_queue 0: everyone else got 503) until the
    image server gave up; now the download runs outside the slot, on a capped pool (server.max_url_fetches), and
    stops at its total deadline (server.url_fetch_timeout_s = 2 s)."""
    with (
        TrickleServer(interval_s=0.5, total_s=30.0) as trickle,
        server_process(_url_server_sections(max_url_fetches=1), fake={}) as base,
    ):
        with _posting(base, trickle.url) as slow:
            time.sleep(0.8)  # the download is under way
            start = time.monotonic()
            other = httpx.post(base + "/v1/segment/box", json={"image": b64_png(), "box": [1, 1, 20, 20]}, timeout=30)
            other_s = time.monotonic() - start
            assert other.status_code == 200, other.text
            assert other_s < 5.0, f"the other request waited {other_s:.2f} s"
            second = httpx.post(base + "/v1/embed", json={"image": trickle.url}, timeout=30)
            assert second.status_code == 503 and second.json()["error"]["code"] == "queue_full", second.text
            assert second.headers["Retry-After"] == "1"
        assert slow["status"] == 504 and slow["body"]["error"]["code"] == "url_timeout", slow
        assert "server.url_fetch_timeout_s" in slow["body"]["error"]["message"]
        assert slow["seconds"] < 2.0 + 3.0, slow["seconds"]  # the deadline plus slack for a loaded machine
        deadline = time.monotonic() + 5.0
        while not trickle.closed_after and time.monotonic() < deadline:
            time.sleep(0.05)
        assert trickle.closed_after and trickle.closed_after[0] < 2.0 + 3.0, trickle.closed_after
        print(
            f"F3: other request {other_s * 1000:.0f} ms while trickling; trickle answered "
            f"{slow['status']} after {slow['seconds']:.2f} s; image server saw the close after "
            f"{trickle.closed_after[0]:.2f} s"
        )


def test_a_client_that_disconnects_stops_its_url_download() -> None:
    """Work must not outlive its request: a client that went away while its image URL trickled in used to keep the
    download (and one of server.max_url_fetches threads) until server.url_fetch_timeout_s (20 s here)."""
    import json
    import socket

    with (
        TrickleServer(interval_s=0.5, total_s=30.0) as trickle,
        server_process(_url_server_sections(url_fetch_timeout_s=20.0), fake={}) as base,
    ):
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps({"image": trickle.url}).encode()
        head = (
            f"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(head + body)
            time.sleep(1.0)  # the download is under way
        gone = time.monotonic()
        while not trickle.closed_after and time.monotonic() - gone < 10.0:
            time.sleep(0.05)
        assert trickle.closed_after, "the download was still running 10 s after its client left"
        stopped_s = trickle.closed_after[0] - 1.0
        assert stopped_s < 3.0, f"the download stopped {stopped_s:.2f} s after the client left"
        healthy = httpx.post(base + "/v1/segment/box", json={"image": b64_png(), "box": [1, 1, 20, 20]}, timeout=30)
        assert healthy.status_code == 200, healthy.text


def test_a_downloaded_image_is_decoded_only_once_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetcher used to decode before admission: a URL request that then found every slot taken (503) had
    decoded its image for nothing, and queued URL requests held decoded pixels (3 bytes a pixel) instead of the
    encoded body, outside the server.max_concurrency bound on decode memory. Now only the download happens first."""
    decodes: list[int] = []
    real_decode = image_decode.decode_stream

    def counting(*args: Any, **kwargs: Any) -> Any:
        decodes.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(image_decode, "decode_stream", counting)
    image = png_bytes(20, 30)
    fetches = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=image)))
    backend = FakeBackend()
    config = build_config(input={"allow_urls": True}, server={"max_concurrency": 1, "max_queue": 0})
    with fetches, running(create_app(config, backend=backend, http_client=fetches)) as client:
        backend.encode_delay_s = 1.5
        busy = threading.Thread(target=client.post, args=("/v1/embed",), kwargs={"json": {"image": b64_png()}})
        busy.start()
        try:
            deadline = time.monotonic() + 10
            while backend.encode_calls < 2 and time.monotonic() < deadline:  # the warm-up, then the busy call
                time.sleep(0.02)
            before = len(decodes)
            refused = client.post("/v1/embed", json={"image": "http://images.example/a.png"})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full", refused.text
            assert len(decodes) == before, "the refused request decoded its image"
        finally:
            busy.join(timeout=30)
        backend.encode_delay_s = 0.0
        fetched = client.post("/v1/embed", json={"image": "http://images.example/a.png"})
        assert fetched.status_code == 200 and (fetched.json()["width"], fetched.json()["height"]) == (30, 20)
