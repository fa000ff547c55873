"""Bad input, size limits, the bounded queue, timeouts and failures: always a JSON error, never a hang or a 500."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from httpx import Response

from perceptra_seg.exceptions import ResourceExhaustedError
from perceptra_seg.service import create_app

from .helpers import FakeBackend, b64_png, build_config, png_bytes, running

BOX = [4, 4, 40, 30]


def _envelope(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.text
    return dict(body["error"])


@pytest.fixture
def client(fake_client: Callable[..., Any]) -> Iterator[TestClient]:
    with fake_client() as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"box": BOX}, "image"),  # neither image nor image_id
        ({"image": "x", "image_id": "0" * 32, "box": BOX}, "image"),  # both
        ({"image": "x", "box": [1, 2, 3]}, "box"),
        ({"image": "x", "box": [1, 2, 3, "a"]}, "box"),
        ({"image": "x", "box": BOX, "output_formats": ["numpy"]}, "output_formats"),
        ({"image": "x", "box": BOX, "colour": "red"}, "colour"),
        ({"image": "x", "box": BOX, "multimask": "maybe"}, "multimask"),
        ({"image_id": "../../etc", "box": BOX}, "image_id"),
    ],
)
def test_malformed_bodies_are_422(client: TestClient, payload: dict[str, Any], field: str) -> None:
    error = _envelope(client.post("/v1/segment/box", json=payload), 422, "validation_error")
    assert field in error["message"]


def test_invalid_json_and_non_finite_numbers_are_422(client: TestClient) -> None:
    headers = {"Content-Type": "application/json"}
    _envelope(client.post("/v1/segment/box", content=b'{"image": ', headers=headers), 422, "validation_error")
    nan = b'{"image": "x", "box": [NaN, 1, 2, 3]}'
    assert (
        "box"
        in _envelope(client.post("/v1/segment/box", content=nan, headers=headers), 422, "validation_error")["message"]
    )
    _envelope(
        client.post("/v1/segment", json={"image": "x", "points": [{"x": 1, "y": 2, "label": 2}]}),
        422,
        "validation_error",
    )


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"image": "@@not base64@@", "box": BOX}, "base64"),
        ({"image": base64.b64encode(b"plain text, not an image").decode(), "box": BOX}, "not a recognised image"),
        ({"image": b64_png(), "box": [30, 4, 10, 20]}, "x1 < x2"),
        ({"image": b64_png(), "box": [500, 500, 600, 600]}, "outside"),
        ({"image": "http://example.com/a.png", "box": BOX}, "disabled"),
    ],
)
def test_bad_images_and_prompts_are_400(
    client: TestClient, fake_backend: FakeBackend, payload: dict[str, Any], fragment: str
) -> None:
    before = fake_backend.encode_calls
    error = _envelope(client.post("/v1/segment/box", json=payload), 400, "invalid_input")
    assert fragment in error["message"]
    assert fake_backend.encode_calls == before


def test_points_outside_the_image_and_empty_prompts_are_400(client: TestClient) -> None:
    outside = {"image": b64_png(), "points": [{"x": 1000, "y": 2}]}
    assert "outside" in _envelope(client.post("/v1/segment/points", json=outside), 400, "invalid_input")["message"]
    _envelope(client.post("/v1/segment", json={"image": b64_png()}), 400, "invalid_input")
    _envelope(client.post("/v1/segment", json={"image": b64_png(), "prompts": [{}]}), 400, "invalid_input")


def test_a_server_path_is_never_opened(client: TestClient, tmp_path: Path) -> None:
    picture = tmp_path / "secret.png"
    picture.write_bytes(png_bytes())
    response = client.post("/v1/segment/box", json={"image": str(picture), "box": BOX})
    assert "base64" in _envelope(response, 400, "invalid_input")["message"]
    file_url = client.post("/v1/embed", json={"image": f"file://{picture}"})
    _envelope(file_url, 400, "invalid_input")


def test_empty_output_formats_give_only_the_summary(client: TestClient) -> None:
    body = client.post("/v1/segment/box", json={"image": b64_png(), "box": BOX, "output_formats": []}).json()
    assert set(body) == {"score", "area", "bbox", "prompt_index", "latency_ms", "model_info", "request_id"}


def test_unknown_routes_and_methods_use_the_envelope(client: TestClient) -> None:
    _envelope(client.get("/v1/nothing"), 404, "not_found")
    _envelope(client.get("/v1/segment/box"), 405, "method_not_allowed")
    _envelope(client.post("/v1/segment/box", json={"image_id": "0" * 32, "box": BOX}), 404, "not_found")


def test_body_limit_is_checked_before_reading(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(server={"max_body_bytes": 2000}) as client:
        big = {"image": "A" * 4000, "box": BOX}
        error = _envelope(client.post("/v1/segment/box", json=big), 413, "payload_too_large")
        assert "2000" in error["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
            yield b'{"image": "'
            for _ in range(10):
                yield b"A" * 500
            yield b'", "box": [4, 4, 40, 30]}'

        streamed = client.post("/v1/segment/box", content=chunks(), headers={"Content-Type": "application/json"})
        _envelope(streamed, 413, "payload_too_large")
        upload = client.post("/v1/embed/upload", files={"file": ("a.png", b"\0" * 5000)})
        _envelope(upload, 413, "payload_too_large")
        assert client.post("/v1/segment/box", json={"image": b64_png(8, 8), "box": [1, 1, 6, 6]}).status_code == 200
    assert fake_backend.encode_calls == 2  # warm-up + the small request


def test_image_byte_and_pixel_limits_are_413(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(input={"max_bytes": 1000, "max_pixels": 40 * 40}) as client:
        encoded = b64_png(64, 64)  # ~12 kB of PNG noise
        error = _envelope(client.post("/v1/embed", json={"image": encoded}), 413, "image_too_large")
        assert "1000" in error["message"]
        upload = client.post("/v1/embed/upload", files={"file": ("a.png", png_bytes(64, 64))})
        _envelope(upload, 413, "image_too_large")
        flat = base64.b64encode(_flat_png(50, 50)).decode()
        pixels = _envelope(client.post("/v1/embed", json={"image": flat}), 413, "image_too_large")
        assert "2500" in pixels["message"]
    assert fake_backend.encode_calls == 1  # only the warm-up


def _flat_png(height: int, width: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _post_in_thread(
    client: TestClient, results: list[int], path: str = "/v1/segment/box", payload: dict[str, Any] | None = None
) -> threading.Thread:
    body = payload or {"image": b64_png(), "box": BOX}
    thread = threading.Thread(target=lambda: results.append(client.post(path, json=body).status_code))
    thread.start()
    return thread


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_full_queue_answers_503_at_once(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(server={"max_concurrency": 1, "max_queue": 1}) as client:
        runner = client.app.state.service.runner  # type: ignore[attr-defined]
        fake_backend.encode_delay_s = 1.0
        statuses: list[int] = []
        threads = [_post_in_thread(client, statuses, payload={"image": b64_png(seed=i), "box": BOX}) for i in range(2)]
        _wait_for(lambda: runner.admitted == 2)
        start = time.monotonic()
        rejected = client.post("/v1/segment/box", json={"image": b64_png(seed=9), "box": BOX})
        assert time.monotonic() - start < 0.5
        _envelope(rejected, 503, "queue_full")
        assert rejected.headers["Retry-After"] == "1"
        assert client.get("/v1/healthz").status_code == 200
        for thread in threads:
            thread.join()
        assert statuses == [200, 200]
        assert runner.admitted == 0


def test_max_concurrency_runs_calls_in_parallel(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(server={"max_concurrency": 2, "max_queue": 0}) as client:
        runner = client.app.state.service.runner  # type: ignore[attr-defined]
        fake_backend.encode_delay_s = 0.8
        statuses: list[int] = []
        start = time.monotonic()
        threads = [
            _post_in_thread(client, statuses, payload={"image": b64_png(seed=20 + i), "box": BOX}) for i in range(2)
        ]
        _wait_for(lambda: runner.admitted == 2)
        _envelope(client.post("/v1/segment/box", json={"image": b64_png(seed=29), "box": BOX}), 503, "queue_full")
        for thread in threads:
            thread.join()
        assert statuses == [200, 200]
        assert time.monotonic() - start < 1.5  # two 0.8 s calls overlapped (in sequence: >= 1.6 s)


def test_embed_needs_the_embedding_cache(fake_client: Callable[..., Any]) -> None:
    with fake_client(cache={"enabled": False}) as client:
        _envelope(client.post("/v1/embed", json={"image": b64_png()}), 400, "invalid_config")
        assert client.post("/v1/segment/box", json={"image": b64_png(), "box": BOX}).status_code == 200


def test_embed_larger_than_the_whole_cache_is_400_not_a_dead_id(fake_client: Callable[..., Any]) -> None:
    """The fake backend's embedding takes 4096 bytes; a 4095-byte cache could never keep it."""
    with fake_client(cache={"max_bytes": 4095}) as client:
        error = _envelope(client.post("/v1/embed", json={"image": b64_png()}), 400, "invalid_config")
        assert "cache.max_bytes = 4095" in error["message"]


def test_timeout_is_504_and_the_server_recovers(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(server={"max_concurrency": 1, "request_timeout_s": 0.3}) as client:
        runner = client.app.state.service.runner  # type: ignore[attr-defined]
        fake_backend.encode_delay_s = 1.0
        calls_before = fake_backend.encode_calls
        statuses: list[int] = []
        first = _post_in_thread(client, statuses, payload={"image": b64_png(seed=1), "box": BOX})
        _wait_for(lambda: runner.admitted == 1)
        start = time.monotonic()
        queued = client.post("/v1/segment/box", json={"image": b64_png(seed=2), "box": BOX})
        assert time.monotonic() - start < 0.9
        _envelope(queued, 504, "timeout")
        first.join()
        assert statuses == [504]
        _wait_for(lambda: runner.admitted == 0)
        assert fake_backend.encode_calls == calls_before + 1  # the queued request was dropped, never run
        fake_backend.encode_delay_s = 0.0
        assert client.post("/v1/segment/box", json={"image": b64_png(seed=3), "box": BOX}).status_code == 200


def test_shutdown_waits_for_calls_still_running(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(server={"request_timeout_s": 0.2}) as client:
        fake_backend.encode_delay_s = 0.8
        response = client.post("/v1/segment/box", json={"image": b64_png(seed=30), "box": BOX})
        _envelope(response, 504, "timeout")
        assert fake_backend.encodes_finished == 1  # only the warm-up; the timed-out call still runs
    assert fake_backend.encodes_finished == 2  # the lifespan waited for it before closing the model


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 503, "resource_exhausted"),
        (ResourceExhaustedError("out of GPU memory while encoding"), 503, "resource_exhausted"),
        (MemoryError(), 503, "resource_exhausted"),
        (RuntimeError("secret internals"), 500, "internal_error"),
    ],
)
def test_failures_leave_the_server_healthy(
    client: TestClient, fake_backend: FakeBackend, failure: BaseException, status: int, code: str
) -> None:
    fake_backend.fail_next = failure
    error = _envelope(client.post("/v1/segment/box", json={"image": b64_png(seed=5), "box": BOX}), status, code)
    assert "secret" not in error["message"]
    after = client.post("/v1/segment/box", json={"image": b64_png(seed=5), "box": BOX})
    assert after.status_code == 200


def test_health_answers_while_inference_runs(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client() as client:
        runner = client.app.state.service.runner  # type: ignore[attr-defined]
        fake_backend.encode_delay_s = 1.0
        statuses: list[int] = []
        thread = _post_in_thread(client, statuses)
        _wait_for(lambda: runner.admitted == 1)
        start = time.monotonic()
        assert client.get("/v1/healthz").status_code == 200
        assert client.get("/v1/readyz").status_code == 200
        assert time.monotonic() - start < 0.5
        thread.join()
        assert statuses == [200]


class _BlockingWarmup(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def encode(self, image: Any) -> Any:
        self.release.wait(10)
        return super().encode(image)


def test_not_ready_until_the_warm_up_finished() -> None:
    backend = _BlockingWarmup()
    with running(create_app(build_config(), backend=backend), ready=False) as client:
        assert client.get("/v1/healthz").status_code == 200
        not_ready = client.get("/v1/readyz")
        _envelope(not_ready, 503, "not_ready")
        assert int(not_ready.headers["Retry-After"]) > 0
        _envelope(client.post("/v1/segment/box", json={"image": b64_png(), "box": BOX}), 503, "not_ready")
        backend.release.set()
        _wait_for(lambda: client.get("/v1/readyz").status_code == 200)
        assert client.post("/v1/segment/box", json={"image": b64_png(), "box": BOX}).status_code == 200


def test_a_model_that_fails_to_load_is_503_without_details(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "sam_vit_b_01ec64.pth"
    config = build_config(
        model={"name": "sam_v1", "checkpoint_path": str(missing), "offline": True}, runtime={"device": "cpu"}
    )
    with running(create_app(config), ready=False) as client:
        _wait_for(lambda: client.app.state.service.load_error is not None)  # type: ignore[attr-defined]
        error = _envelope(client.get("/v1/readyz"), 503, "model_load_error")
        assert str(tmp_path) not in error["message"]
        _envelope(client.post("/v1/segment/box", json={"image": b64_png(), "box": BOX}), 503, "model_load_error")
        assert client.get("/v1/healthz").status_code == 200
