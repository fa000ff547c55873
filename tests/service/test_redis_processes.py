"""``server.state: redis`` across real worker processes: two service processes, and ``uvicorn --workers 2`` on one
port, each loading the small random-weight SAM 1 checkpoint, sharing one real redis-server."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

pytest.importorskip("redis")

from .helpers import KEY_A, KEY_B, auth, free_port, server_process
from .redis_support import RedisProcess

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

KEY_C = "key-c-5555555555"
BOX = [20.0, 15.0, 110.0, 80.0]


@pytest.fixture(scope="module")
def photo(photos: dict[str, np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(photos["coffee"][::4, ::4])


@pytest.fixture(scope="module")
def photo_b64(photo: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _mask(body: dict[str, Any]) -> np.ndarray:
    rle = body["rle"]
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _sections(config: dict[str, Any], url: str, **server: Any) -> dict[str, Any]:
    settings = {"state": "redis", "redis_url": url, "api_keys": [KEY_A, KEY_B, KEY_C], **server}
    return {**config, "server": settings}


def test_two_processes_share_ids_and_rate_limits(
    redis: RedisProcess,
    small_sam1_config: dict[str, Any],
    small_segmentor: Any,
    photo: np.ndarray,
    photo_b64: str,
) -> None:
    sections = _sections(small_sam1_config, redis.url, rate_limit="5/minute")
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:  # both processes start at the same time
        a, b = pool.map(lambda _: stack.enter_context(server_process(sections)), range(2))
        embedded = httpx.post(a + "/v1/embed", json={"image": photo_b64}, headers=auth(KEY_A), timeout=60)
        assert embedded.status_code == 200, embedded.text
        image_id = embedded.json()["image_id"]
        response = httpx.post(
            b + "/v1/segment/box", json={"image_id": image_id, "box": BOX}, headers=auth(KEY_A), timeout=60
        )
        assert response.status_code == 200, response.text
        expected = small_segmentor.segment_from_box(photo, BOX)
        assert np.array_equal(_mask(response.json()), expected.mask)
        assert response.json()["score"] == pytest.approx(expected.score, abs=1e-6)
        other = httpx.post(
            b + "/v1/segment/box", json={"image_id": image_id, "box": BOX}, headers=auth(KEY_B), timeout=60
        )
        assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
        # one budget of 5 requests per minute for KEY_C, whichever process answers
        statuses = [
            httpx.post(base + "/v1/embed", json={"image": "not an image"}, headers=auth(KEY_C), timeout=60).status_code
            for base in (a, b, a, b, a)
        ]
        assert 429 not in statuses
        over = httpx.post(b + "/v1/embed", json={"image": "not an image"}, headers=auth(KEY_C), timeout=60)
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"


def _uvicorn_workers(config_path: Path, port: int) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "SEGMENTOR_CONFIG": str(config_path),
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "uvicorn", "perceptra_seg.service.main:app", "--workers", "2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_all_ready(base: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Until 12 readiness checks in a row, each on a new connection (so on either worker), answer 200."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    while streak < 12:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "uvicorn exited")
        if time.monotonic() > deadline:
            raise AssertionError("uvicorn workers did not become ready")
        try:
            ok = httpx.get(base + "/v1/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            ok = False
        streak = streak + 1 if ok else 0
        if not ok:
            time.sleep(0.2)


def test_uvicorn_workers_share_ids(
    redis: RedisProcess,
    small_sam1_config: dict[str, Any],
    small_segmentor: Any,
    photo: np.ndarray,
    photo_b64: str,
    tmp_path: Path,
) -> None:
    config_path = tmp_path / "config.yaml"
    sections = _sections(small_sam1_config, redis.url)
    config_path.write_text(yaml.safe_dump({**sections, "logging": {"level": "WARNING"}}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _uvicorn_workers(config_path, port)
    try:
        _wait_all_ready(base, process)
        expected = small_segmentor.segment_from_box(photo, BOX).mask
        for round_ in range(6):  # every call on a new connection: embed and segment land on either worker
            key = KEY_A if round_ % 2 else KEY_B
            embedded = httpx.post(base + "/v1/embed", json={"image": photo_b64}, headers=auth(key), timeout=60)
            assert embedded.status_code == 200, embedded.text
            for _ in range(2):
                response = httpx.post(
                    base + "/v1/segment/box",
                    json={"image_id": embedded.json()["image_id"], "box": BOX},
                    headers=auth(key),
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                assert np.array_equal(_mask(response.json()), expected)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
