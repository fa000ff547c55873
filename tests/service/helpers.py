"""Helpers for the REST service tests: a fast fake backend, config/app builders, image helpers."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from perceptra_seg.backends.base import DecoderOutput, ImageEmbedding, PromptBatch
from perceptra_seg.config import SegmentorConfig
from perceptra_seg.preprocessing import resized_input_size

KEY_A = "key-a-0123456789"
KEY_B = "key-b-9876543210"


class FakeBackend:
    """Backend protocol with constant output: the mask is the centre half of the 1024 input frame.

    ``encode_delay_s`` / ``decode_delay_s`` slow calls down (set them after warm-up to keep start-up fast);
    ``fail_next`` is raised once by the next ``encode``.
    """

    family = "sam1"
    fingerprint = "fake|sam1|test"
    mask_size = 256

    def __init__(self) -> None:
        self.encode_delay_s = 0.0
        self.decode_delay_s = 0.0
        self.fail_next: BaseException | None = None
        self.encode_calls = 0
        self.encodes_finished = 0
        self.decode_calls = 0
        self.closed = False
        self._lock = threading.Lock()

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        with self._lock:
            self.encode_calls += 1
            failure, self.fail_next = self.fail_next, None
        if failure is not None:
            raise failure
        time.sleep(self.encode_delay_s)
        size = (int(image.shape[0]), int(image.shape[1]))
        with self._lock:
            self.encodes_finished += 1
        return ImageEmbedding(size, resized_input_size(size, "sam1"), features=None, nbytes=4096)

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        with self._lock:
            self.decode_calls += 1
        time.sleep(self.decode_delay_s)
        n, k = len(batch), 3 if multimask else 1
        logits = np.full((n, k, 256, 256), -8.0, dtype=np.float32)
        logits[:, :, 64:192, 64:192] = 8.0
        scores = np.tile(np.linspace(0.9, 0.5, k, dtype=np.float32), (n, 1))
        return DecoderOutput(low_res_logits=logits, iou_scores=scores)

    def info(self) -> dict[str, Any]:
        return {"model": "fake", "variant": "constant", "backend": "fake", "device": "cpu", "precision": "fp32"}

    def close(self) -> None:
        self.closed = True


def png_bytes(height: int = 48, width: int = 64, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64_png(height: int = 48, width: int = 64, seed: int = 0) -> str:
    return base64.b64encode(png_bytes(height, width, seed)).decode("ascii")


def build_config(base: dict[str, Any] | None = None, **sections: dict[str, Any]) -> SegmentorConfig:
    """A config from ``base`` sections with ``sections`` merged on top (logging quiet by default)."""
    merged: dict[str, Any] = {k: dict(v) for k, v in (base or {}).items()}
    merged.setdefault("logging", {"level": "WARNING"})
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return SegmentorConfig.load(None, **merged)


def wait_ready(client: TestClient, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.app.state.service.service is not None:  # type: ignore[attr-defined]
            return
        time.sleep(0.02)
    raise AssertionError("service did not become ready")


@contextmanager
def running(app: Any, *, ready: bool = True, headers: dict[str, str] | None = None) -> Iterator[TestClient]:
    with TestClient(app, headers=headers) as client:
        if ready:
            wait_ready(client)
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(app: Any, config: SegmentorConfig, *, ready_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``config.server.host:port`` (loopback) in a thread; yield the base URL."""
    import httpx
    import uvicorn

    from perceptra_seg.service.main import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{config.server.host}:{config.server.port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                if httpx.get(base + "/v1/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise AssertionError("live server did not become ready")
            time.sleep(0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def server_process(
    sections: dict[str, Any], *, fake: dict[str, Any] | None = None, ready_timeout_s: float = 120.0
) -> Iterator[str]:
    """Serve the app in a separate uvicorn process on 127.0.0.1 (see ``serve_process.py``); yield the base URL.

    ``sections`` are config sections (``server.port`` is chosen here); ``fake`` serves a :class:`FakeBackend` with
    those attributes set after its warm-up, else the configured model is loaded. The process is stopped (SIGTERM,
    then SIGKILL) when the block ends.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import httpx

    root = Path(__file__).resolve().parents[2]
    merged = {k: dict(v) for k, v in sections.items()}
    merged.setdefault("logging", {"level": "WARNING"})
    port = free_port()
    merged.setdefault("server", {}).update(host="127.0.0.1", port=port)
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "spec.json"
        spec.write_text(json.dumps({"config": merged, "fake": fake}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.service.serve_process", str(spec)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read().decode() if process.stderr else "server exited")
                try:
                    if httpx.get(base + "/v1/readyz", timeout=5.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("server process did not become ready")
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def metric(base: str, name: str) -> float:
    """The value of an unlabelled metric from the server's ``/metrics`` (needs ``server.public_metrics``)."""
    import httpx

    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def wait_slot_free(base: str, timeout_s: float) -> float:
    """Seconds until no inference call runs or waits (polled through ``/metrics``)."""
    start = time.monotonic()
    while metric(base, "segmentor_inflight_requests") + metric(base, "segmentor_queue_depth") > 0:
        assert time.monotonic() - start < timeout_s, "the slot stayed taken"
        time.sleep(0.02)
    return time.monotonic() - start


#: URLs that urllib.parse or httpx cannot read (issue #15 F2 plus a bad port and a missing host).
MALFORMED_URLS = [
    "http://[::1",
    "http://[",
    "http://[127.0.0.1]/",
    "http://]/",
    "http://a]b/",
    "http://x:99999/a.png",
    "http:///a.png",
]


def wait_batch_finished(client: Any, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Poll ``GET /v1/batch/{job_id}`` until the job is done or failed (at most 1200 polls, 50 ms apart)."""
    for _ in range(1200):
        answer = client.get(f"/v1/batch/{job_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] in ("done", "failed"):
            return dict(answer.json())
        time.sleep(0.05)
    raise AssertionError("batch job did not finish")
