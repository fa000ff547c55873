"""Images whose decode would need more memory than ``input.max_decode_bytes`` get 413 from a live server (loopback).

The image is a 100-megapixel single-strip float32 TIFF header without its pixel data: within the pixel limit, over
the 1 GiB default decode budget. A 413 (not the 400 a decode of the missing strip would give) shows the refusal
comes from the header, before decoding.
"""

from __future__ import annotations

import base64

import httpx

from perceptra_seg.service import create_app

from ..unit.test_decode_memory import _float_tiff_header
from .helpers import FakeBackend, build_config, free_port, live_server


def test_image_over_the_decode_byte_limit_is_413() -> None:
    config = build_config(server={"port": free_port()})
    body = {"image": base64.b64encode(_float_tiff_header(10_000, 10_000)).decode(), "box": [0, 0, 10, 10]}
    with live_server(create_app(config, backend=FakeBackend()), config) as base:
        response = httpx.post(base + "/v1/segment/box", json=body, timeout=30.0)
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "image_too_large"
        assert "max_decode_bytes" in error["message"] and str(2**30) in error["message"]
        assert httpx.get(base + "/v1/healthz", timeout=5.0).status_code == 200
