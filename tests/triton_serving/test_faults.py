"""Faults of a remote Triton: nothing listening, a server that stops answering, a server killed mid-request.

The REST service with ``backend: triton`` answers 503 with a message and stays healthy; the SDK raises
:class:`BackendUnavailableError` naming the URL within ``triton.timeout_s`` (bounds are generous: no hang, not speed).
"""

from __future__ import annotations

import base64
import signal
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from perceptra_seg import Segmentor
from perceptra_seg.exceptions import BackendUnavailableError

from .conftest import TritonServer, free_ports

pytest.importorskip("fastapi")

from perceptra_seg.service import create_app

from ..service.helpers import build_config, running

TIMEOUT_S = 3.0


def test_no_server_is_a_clear_error_naming_the_url(small_sam1_config: dict[str, Any]) -> None:
    (port,) = free_ports(1)
    for protocol in ("http", "grpc"):
        sections = {
            **small_sam1_config,
            "runtime": {"device": "cpu", "backend": "triton"},
            "triton": {"url": f"127.0.0.1:{port}", "protocol": protocol, "timeout_s": TIMEOUT_S},
        }
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=rf"Triton server at 127\.0\.0\.1:{port} \({protocol}\)"):
            Segmentor(sections)
        assert time.monotonic() - started < TIMEOUT_S + 10


def _png_b64(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    assert ok
    return base64.b64encode(data.tobytes()).decode("ascii")


def test_rest_service_answers_503_when_triton_stalls_or_dies(
    small_sam1_config: dict[str, Any], photos: dict[str, np.ndarray], tmp_path: Path
) -> None:
    server = TritonServer({**small_sam1_config, "runtime": {"device": "cpu", "precision": "fp32"}}, tmp_path)
    try:
        config = build_config(server.client_sections(timeout_s=TIMEOUT_S))
        with running(create_app(config)) as client:
            body = {"image": _png_b64(photos["coffee"]), "box": [50, 40, 300, 250]}
            assert client.post("/v1/segment/box", json=body).status_code == 200

            # the server stops answering (SIGSTOP): the request fails after triton.timeout_s, not later
            server.signal(signal.SIGSTOP)
            started = time.monotonic()
            stalled = client.post("/v1/segment/box", json={**body, "image": _png_b64(photos["chelsea"])})
            assert time.monotonic() - started < TIMEOUT_S + 10
            assert stalled.status_code == 503, stalled.text
            assert stalled.json()["error"]["code"] == "backend_unavailable"
            assert "did not answer" in stalled.json()["error"]["message"]
            assert client.get("/v1/healthz").status_code == 200

            # killed while a request is in flight
            answers: list[Any] = []
            flipped = _png_b64(np.ascontiguousarray(photos["coffee"][::-1]))
            request = threading.Thread(
                target=lambda: answers.append(client.post("/v1/segment/box", json={**body, "image": flipped}))
            )
            request.start()
            time.sleep(0.5)
            server.kill()
            request.join(timeout=TIMEOUT_S + 10)
            assert answers and answers[0].status_code == 503, answers
            assert "127.0.0.1" in answers[0].json()["error"]["message"]
            assert client.get("/v1/healthz").status_code == 200
            again = client.post("/v1/segment/box", json=body)  # cached embedding, but the decoder is remote too
            assert again.status_code == 503
    finally:
        server.stop()


def test_python_client_raises_backend_unavailable_for_the_services_503() -> None:
    from perceptra_seg.client._errors import error_from_response

    body = {"error": {"code": "backend_unavailable", "message": "Triton server at h:1 (http) did not answer"}}
    error = error_from_response(503, body, None)
    assert isinstance(error, BackendUnavailableError)
    assert "h:1" in str(error)
