"""``server.state: redis`` with a real redis-server: apps in this process, each with its own Segmentor cache and id
registry (as separate workers have), sharing image ids, embeddings and rate limits only through Redis.

The model is the small random-weight SAM 1 (one backend object, so it is loaded once; every app still encodes into
its own cache). Separate worker processes and ``uvicorn --workers 2`` are in test_redis_processes.py.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils

pytest.importorskip("redis")

from perceptra_seg.exceptions import ConfigError
from perceptra_seg.service import create_app
from perceptra_seg.service.redis_link import RETRY_S

from .helpers import KEY_A, KEY_B, FakeBackend, auth, build_config, running
from .redis_support import RedisProcess, black_hole, redis_server

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

BOX = [20.0, 15.0, 110.0, 80.0]


@pytest.fixture(scope="module")
def photo_b64(photos: dict[str, np.ndarray]) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(photos["coffee"][::4, ::4])).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _mask(body: dict[str, Any]) -> np.ndarray:
    rle = body["rle"]
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def worker(url: str, config: dict[str, Any], backend: Any, **server: Any) -> AbstractContextManager[TestClient]:
    """One 'worker': an app with its own Segmentor (own cache) and registry, state in the Redis at ``url``."""
    settings = {"state": "redis", "redis_url": url, "api_keys": [KEY_A, KEY_B], **server}
    return running(create_app(build_config(config, server=settings), backend=backend))


def _embed(client: TestClient, image: str, key: str = KEY_A) -> str:
    response = client.post("/v1/embed", json={"image": image}, headers=auth(key))
    assert response.status_code == 200, response.text
    return str(response.json()["image_id"])


def _box(client: TestClient, source: dict[str, str], key: str = KEY_A) -> Any:
    return client.post("/v1/segment/box", json={**source, "box": BOX}, headers=auth(key))


def test_embed_on_one_worker_segment_on_another(
    redis: RedisProcess, small_sam1_config: dict[str, Any], small_segmentor: Any, photo_b64: str, photos: Any
) -> None:
    backend = small_segmentor.backend
    with worker(redis.url, small_sam1_config, backend) as a, worker(redis.url, small_sam1_config, backend) as b:
        image_id = _embed(a, photo_b64)
        assert _embed(b, photo_b64) == image_id  # the HMAC secret is shared: same key + image -> same id
        response = _box(b, {"image_id": image_id})
        assert response.status_code == 200, response.text
        expected = small_segmentor.segment_from_box(np.ascontiguousarray(photos["coffee"][::4, ::4]), BOX)
        assert np.array_equal(_mask(response.json()), expected.mask)  # float32 storage: exactly the SDK's mask
        assert response.json()["score"] == pytest.approx(expected.score, abs=1e-6)
        other = _box(b, {"image_id": image_id}, key=KEY_B)
        assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
        assert _box(a, {"image_id": "0" * 32}).status_code == 404


def test_float16_storage_keeps_masks(
    redis: RedisProcess, small_sam1_config: dict[str, Any], small_segmentor: Any, photo_b64: str
) -> None:
    """float16 storage takes half the bytes; masks after its round trip vs after float32 storage: IoU >= 0.99
    (measured 0.9998 for the box and 1.0 for the points on this model and photo)."""
    backend = small_segmentor.backend
    masks = {}
    for dtype in ("float32", "float16"):
        _flush(redis.url)  # an embedding already stored (in another dtype) would be reused, not written again
        with worker(redis.url, small_sam1_config, backend, redis_embedding_dtype=dtype) as a:
            image_id = _embed(a, photo_b64)
        assert _stored_bytes(redis.url) == (4 if dtype == "float32" else 2) * 256 * 64 * 64  # SAM 1: 256 x 64 x 64
        with worker(redis.url, small_sam1_config, backend, redis_embedding_dtype=dtype) as b:
            boxed = _box(b, {"image_id": image_id})
            clicked = b.post(
                "/v1/segment/points",
                json={"image_id": image_id, "points": [{"x": 60, "y": 40, "label": 1}, {"x": 20, "y": 20, "label": 0}]},
                headers=auth(KEY_A),
            )
            assert boxed.status_code == clicked.status_code == 200, clicked.text
            masks[dtype] = (_mask(boxed.json()), _mask(clicked.json()))
    for exact, half in zip(masks["float32"], masks["float16"], strict=True):
        assert exact.any() and _iou(exact, half) >= 0.99


def _flush(url: str) -> None:
    import redis as redis_py

    with redis_py.Redis.from_url(url) as client:
        client.flushdb()


def _stored_bytes(url: str) -> int:
    """Bytes of the arrays in the one stored embedding (the value without its marker and JSON header)."""
    import redis as redis_py

    with redis_py.Redis.from_url(url) as client:
        (key,) = client.keys("perceptra-seg:emb:*")
        value = client.get(key)
    (header,) = struct.unpack_from("<I", value, 4)
    return len(value) - 8 - int(header)


def test_ids_expire_after_the_ttl(
    redis: RedisProcess, small_sam1_config: dict[str, Any], small_segmentor: Any, photo_b64: str
) -> None:
    backend = small_segmentor.backend
    with worker(redis.url, small_sam1_config, backend, redis_embedding_ttl_s=1) as a:
        image_id = _embed(a, photo_b64)
        assert _box(a, {"image_id": image_id}).status_code == 200
        time.sleep(1.3)
        with worker(redis.url, small_sam1_config, backend, redis_embedding_ttl_s=1) as b:
            assert _box(b, {"image_id": image_id}).status_code == 404
        assert _box(a, {"image_id": image_id}).status_code == 404  # the embedding worker forgets it too


def test_a_restarted_worker_keeps_ids(
    redis: RedisProcess, small_sam1_config: dict[str, Any], small_segmentor: Any, photo_b64: str
) -> None:
    backend = small_segmentor.backend
    with worker(redis.url, small_sam1_config, backend) as a:
        image_id = _embed(a, photo_b64, key=KEY_B)
        before = _mask(_box(a, {"image_id": image_id}, key=KEY_B).json())
    with worker(redis.url, small_sam1_config, backend) as restarted:
        response = _box(restarted, {"image_id": image_id}, key=KEY_B)
        assert response.status_code == 200, response.text
        assert np.array_equal(_mask(response.json()), before)


def test_embedding_of_another_model_is_refused(
    redis: RedisProcess, small_sam1_config: dict[str, Any], small_segmentor: Any, photo_b64: str
) -> None:
    with worker(redis.url, small_sam1_config, small_segmentor.backend) as a:
        image_id = _embed(a, photo_b64)
    with worker(redis.url, {}, FakeBackend()) as other:
        response = _box(other, {"image_id": image_id})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "model_mismatch"
    assert "another model" in response.json()["error"]["message"]


def test_embedding_over_the_byte_bound_is_refused(
    redis: RedisProcess, small_sam1_config: dict[str, Any], small_segmentor: Any, photo_b64: str
) -> None:
    with worker(redis.url, small_sam1_config, small_segmentor.backend, redis_max_embedding_bytes=1000) as a:
        response = a.post("/v1/embed", json={"image": photo_b64}, headers=auth(KEY_A))
    assert response.status_code == 400
    assert "redis_max_embedding_bytes" in response.json()["error"]["message"]


def test_rate_limit_is_one_budget_for_every_worker(redis: RedisProcess) -> None:
    fake = FakeBackend()
    with (
        worker(redis.url, {}, fake, rate_limit="4/minute") as a,
        worker(redis.url, {}, fake, rate_limit="4/minute") as b,
    ):
        headers = auth(KEY_A)
        statuses = [
            client.post("/v1/embed", json={"image": "x"}, headers=headers).status_code for client in (a, b, a, b)
        ]
        assert 429 not in statuses
        over = b.post("/v1/embed", json={"image": "x"}, headers=headers)
        assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1


def test_redis_outage_degrades_without_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture, photo_b64: str) -> None:
    fake = FakeBackend()
    with redis_server(tmp_path) as own:
        settings = {"rate_limit": "100/minute"}
        with worker(own.url, {}, fake, **settings) as a, worker(own.url, {}, fake, **settings) as b:
            held = _embed(a, photo_b64)
            assert _box(b, {"image_id": held}).status_code == 200  # b now holds it locally as well
            only_in_redis = _embed(a, _other_image())
            own.kill()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="perceptra_seg.service"):
                for _ in range(3):
                    assert _box(b, {"image": photo_b64}).status_code == 200  # encoded locally
                    assert _box(b, {"image_id": held}).status_code == 200  # held by this worker
                    unavailable = _box(b, {"image_id": only_in_redis})
                    assert unavailable.status_code == 503, unavailable.text
                    assert unavailable.json()["error"]["code"] == "state_unavailable"
                    assert "send the image" in unavailable.json()["error"]["message"]
                    assert int(unavailable.headers["Retry-After"]) >= 1
                assert b.get("/v1/healthz").status_code == 200
                assert _embed(b, photo_b64)  # embedding still works (the id is this worker's only)
            warnings = [r.getMessage() for r in caplog.records if "is unavailable" in r.getMessage()]
            assert len([w for w in warnings if "(rate limits)" not in w]) == 1  # once per outage, not per request
            assert len([w for w in warnings if "(rate limits)" in w]) == 1
            # Redis comes back empty on the same port: after the back-off both workers share state again
            restarted = RedisProcess(tmp_path, port=own.port)
            try:
                time.sleep(RETRY_S + 0.2)
                with caplog.at_level(logging.WARNING, logger="perceptra_seg.service"):
                    fresh = _embed(b, _other_image(90))
                    assert _embed(a, _other_image(90)) == fresh  # one secret again, although a never saw the outage
                    assert _box(a, {"image_id": fresh}).status_code == 200
                assert any("is available again" in r.getMessage() for r in caplog.records)
            finally:
                restarted.kill()


def _other_image(value: int = 90) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_a_black_hole_redis_costs_at_most_the_timeout(photo_b64: str) -> None:
    fake = FakeBackend()
    with black_hole() as url, worker(url, {}, fake, redis_timeout_s=0.3, rate_limit="100/minute") as a:
        start = time.monotonic()
        assert _box(a, {"image": photo_b64}).status_code == 200
        image_id = _embed(a, photo_b64)
        assert _box(a, {"image_id": image_id}).status_code == 200
        assert _box(a, {"image_id": "1" * 32}).status_code == 503
        assert time.monotonic() - start < 60  # a hang guard, not a speed check: each Redis call gives up after 0.3 s


def test_redis_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        build_config(server={"redis_url": "http://127.0.0.1:6379"})
    with pytest.raises(ConfigError):
        build_config(server={"redis_embedding_dtype": "int8"})


def test_ws_session_starts_from_an_id_embedded_on_another_worker(redis: RedisProcess, photo_b64: str) -> None:
    fake = FakeBackend()
    with worker(redis.url, {}, fake) as a, worker(redis.url, {}, fake) as b:
        image_id = _embed(a, photo_b64)
        with b.websocket_connect("/v1/ws", headers=auth(KEY_A)) as ws:
            ws.send_text(json.dumps({"type": "image_id", "image_id": image_id}))
            assert ws.receive_json() == {"type": "ready", "image_id": image_id, "width": 150, "height": 100}
            ws.send_text(json.dumps({"type": "prompt", "object": 0, "points": [{"x": 30, "y": 30, "label": 1}]}))
            assert ws.receive_json()["type"] == "mask"
        with b.websocket_connect("/v1/ws", headers=auth(KEY_B)) as ws:
            ws.send_text(json.dumps({"type": "image_id", "image_id": image_id}))
            assert ws.receive_json()["code"] == "not_found"
