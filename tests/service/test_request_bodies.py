"""Request bodies (F4): authentication before the body is read, prompt/point caps, bounded parsing cost."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from perceptra_seg.config import ServerConfig
from perceptra_seg.service.bodies import value_budget

from .helpers import KEY_A, FakeBackend, auth, b64_png, server_process

BOX = [1, 1, 20, 20]
POINT = {"x": 3, "y": 4, "label": 1}


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"boxes": [BOX] * 4}, "4 prompts, over the limit of 3 (server.max_prompts)"),
        ({"boxes": [BOX] * 2, "prompts": [{"box": BOX}] * 2}, "4 prompts"),
        ({"prompts": [{"box": BOX}] * 3, "points": [POINT]}, "4 prompts"),
        ({"prompts": [{"points": [POINT] * 6}]}, "6 points, over the limit of 5 (server.max_points_per_prompt)"),
        ({"points": [POINT] * 6}, "6 points"),
    ],
)
def test_prompt_and_point_caps_are_413(
    fake_client: Callable[..., Any], fake_backend: FakeBackend, payload: dict[str, Any], fragment: str
) -> None:
    with fake_client(server={"max_prompts": 3, "max_points_per_prompt": 5}) as client:
        message = _error(client.post("/v1/segment", json={"image": b64_png(), **payload}), 413, "request_too_large")
        assert fragment in message
        options = json.dumps(payload)
        upload = client.post("/v1/segment/upload", files={"file": ("a.png", b"x")}, data={"request": options})
        assert fragment in _error(upload, 413, "request_too_large")
        points = client.post("/v1/segment/points", json={"image": b64_png(), "points": [POINT] * 6})
        assert "server.max_points_per_prompt" in _error(points, 413, "request_too_large")
        at_the_caps = {"image": b64_png(), "boxes": [BOX] * 2, "prompts": [{"points": [POINT] * 5}]}
        assert client.post("/v1/segment", json=at_the_caps).status_code == 200
    assert fake_backend.encode_calls == 2  # the warm-up and the request at the caps: refused ones never decode


def test_a_body_with_millions_of_values_is_refused_before_parsing(fake_client: Callable[..., Any]) -> None:
    body = json.dumps({"image": b64_png(), "boxes": [BOX] * 200_000}).encode()
    with fake_client() as client:
        start = time.monotonic()
        response = client.post("/v1/segment", content=body, headers={"Content-Type": "application/json"})
        seconds = time.monotonic() - start
    assert "server.max_prompts" in _error(response, 413, "request_too_large")
    assert seconds < 2.0  # no parse of 10⁶ numbers (that took seconds); the scan is a few byte counts


def test_value_budget_admits_every_body_within_the_caps() -> None:
    server = ServerConfig(max_prompts=4, max_points_per_prompt=3)
    prompt = {"box": [1.5, 2, 30, 40], "points": [{"x": 1, "y": 2, "label": 0}] * 3}
    widest = {
        "image": "data:image/png;base64,AAAA",
        "prompts": [prompt] * 4,
        "boxes": [],
        "points": [],
        "strategy": "all",
        "output_formats": ["rle", "png", "polygons"],
        "multimask": True,
    }
    text = json.dumps(widest).encode()
    assert text.count(b",") + text.count(b"[") + text.count(b"{") <= value_budget(server)


def _raw_post(port: int, headers: dict[str, str], body_bytes: int) -> tuple[bytes, float]:
    """Send a request head announcing ``body_bytes`` but no body; return the response head and its delay."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {body_bytes}\r\n{head}\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(request)
        sock.settimeout(5.0)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            data = b""
        return data, time.monotonic() - start


def test_authentication_happens_before_the_body_is_read() -> None:
    """F4: FastAPI used to read and parse the whole body before the API-key check ran (a 23 MB body: 401 after
    3 s of parsing). Now a bad key is answered from the headers alone: here no body byte is ever sent."""
    with server_process({"server": {"api_keys": [KEY_A]}}, fake={}) as base:
        port = int(base.rsplit(":", 1)[1])
        missing, missing_s = _raw_post(port, {}, 23_000_000)
        wrong, wrong_s = _raw_post(port, auth("wrong-key-0000"), 23_000_000)
    assert missing.startswith(b"HTTP/1.1 401"), missing[:200]
    assert wrong.startswith(b"HTTP/1.1 403"), wrong[:200]
    assert max(missing_s, wrong_s) < 3.0, (missing_s, wrong_s)
