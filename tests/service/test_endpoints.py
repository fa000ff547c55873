"""Every endpoint against the real app serving the small random-weight SAM 1 model; results must equal the SDK's."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg.service import create_app

from .helpers import build_config, running

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def _encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo(photos: dict[str, np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(photos["coffee"][::4, ::4])  # 100 x 150, keeps requests small


@pytest.fixture(scope="module")
def photo_b64(photo: np.ndarray) -> str:
    return base64.b64encode(_encode_png(photo)).decode("ascii")


@pytest.fixture(scope="module")
def client(small_segmentor: Any, small_sam1_config: dict[str, Any]) -> Iterator[TestClient]:
    app = create_app(build_config(small_sam1_config), backend=small_segmentor.backend)
    with running(app) as test_client:
        yield test_client


def _segmentor(client: TestClient) -> Any:
    return client.app.state.service.service.segmentor  # type: ignore[attr-defined]


def _rle_mask(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _png_mask(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))).astype(bool)


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/v1/healthz").json() == {"status": "ok"}
    ready = client.get("/v1/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_info"]["model"] == "sam_v1"


def test_box_outputs_equal_the_sdk(client: TestClient, small_segmentor: Any, photo: np.ndarray, photo_b64: str) -> None:
    box = [20.0, 15.0, 110.0, 80.0]
    response = client.post(
        "/v1/segment/box", json={"image": photo_b64, "box": box, "output_formats": ["rle", "png", "polygons"]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = small_segmentor.segment_from_box(photo, box, output_formats=["numpy", "polygons"])
    assert np.array_equal(_rle_mask(body["rle"]), expected.mask)
    assert np.array_equal(_png_mask(body["png_base64"]), expected.mask)
    assert body["polygons"] == expected.polygons
    assert body["area"] == expected.area == int(expected.mask.sum())
    assert body["bbox"] == list(expected.bbox)
    assert body["score"] == pytest.approx(expected.score, abs=1e-6)
    assert body["model_info"]["model"] == "sam_v1"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert body["latency_ms"] > 0


def test_points_with_multimask_return_the_best_mask(
    client: TestClient, small_segmentor: Any, photo: np.ndarray, photo_b64: str
) -> None:
    points = [{"x": 60, "y": 40, "label": 1}, {"x": 10, "y": 90, "label": 0}]
    response = client.post(
        "/v1/segment/points",
        json={"image": photo_b64, "points": points, "multimask": True, "output_formats": ["rle"]},
    )
    assert response.status_code == 200, response.text
    expected = small_segmentor.segment_from_points(
        photo, [(60, 40, 1), (10, 90, 0)], multimask=True, output_formats=["numpy"]
    )
    body = response.json()
    assert np.array_equal(_rle_mask(body["rle"]), expected.mask)
    assert body["score"] == pytest.approx(expected.score, abs=1e-6)
    assert "png_base64" not in body and "polygons" not in body


def test_segment_returns_one_result_per_prompt(
    client: TestClient, small_segmentor: Any, photo: np.ndarray, photo_b64: str
) -> None:
    request = {
        "image": photo_b64,
        "prompts": [{"box": [5, 5, 60, 50]}, {"points": [{"x": 100, "y": 60}]}],
        "boxes": [[70, 20, 140, 95]],
        "output_formats": ["rle"],
    }
    response = client.post("/v1/segment", json=request)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = small_segmentor.segment(
        photo,
        prompts=[{"box": (5, 5, 60, 50)}, {"points": [(100, 60, 1)]}],
        boxes=[(70, 20, 140, 95)],
        output_formats=["numpy"],
    )
    assert [r["prompt_index"] for r in results] == [0, 1, 2]
    for got, want in zip(results, expected, strict=True):
        assert np.array_equal(_rle_mask(got["rle"]), want.mask)
        assert got["area"] == want.area

    largest = client.post("/v1/segment", json={**request, "strategy": "largest"}).json()["results"]
    assert len(largest) == 1 and largest[0]["area"] == max(r["area"] for r in results)
    merged = client.post("/v1/segment", json={**request, "strategy": "merge"}).json()["results"]
    union = np.logical_or.reduce([_rle_mask(r["rle"]) for r in results])
    assert len(merged) == 1 and merged[0]["prompt_index"] == -1
    assert np.array_equal(_rle_mask(merged[0]["rle"]), union)


def test_embed_then_segment_by_id_skips_decoding_and_encoding(
    client: TestClient, photo: np.ndarray, photo_b64: str
) -> None:
    flipped = np.ascontiguousarray(photo[::-1])  # an image no other test has cached
    image = base64.b64encode(_encode_png(flipped)).decode("ascii")
    segmentor = _segmentor(client)
    before = segmentor.encoder_calls
    embedded = client.post("/v1/embed", json={"image": image})
    assert embedded.status_code == 200, embedded.text
    body = embedded.json()
    assert (body["width"], body["height"]) == (flipped.shape[1], flipped.shape[0])
    assert segmentor.encoder_calls == before + 1

    by_id = client.post("/v1/segment/box", json={"image_id": body["image_id"], "box": [10, 10, 90, 70]})
    again = client.post("/v1/segment", json={"image_id": body["image_id"], "boxes": [[10, 10, 90, 70]]})
    assert by_id.status_code == again.status_code == 200
    assert segmentor.encoder_calls == before + 1
    by_image = client.post("/v1/segment/box", json={"image": image, "box": [10, 10, 90, 70]})
    assert by_id.json()["rle"] == by_image.json()["rle"] == again.json()["results"][0]["rle"]
    assert segmentor.encoder_calls == before + 1  # the same pixels hit the embedding cache


def test_uploads_match_json_requests(client: TestClient, photo: np.ndarray, photo_b64: str) -> None:
    data = _encode_png(photo)
    embedded = client.post("/v1/embed/upload", files={"file": ("photo.png", data, "image/png")})
    assert embedded.status_code == 200, embedded.text
    assert embedded.json()["image_id"] == client.post("/v1/embed", json={"image": photo_b64}).json()["image_id"]

    options = '{"boxes": [[20, 15, 110, 80]], "output_formats": ["rle", "png"]}'
    uploaded = client.post("/v1/segment/upload", files={"file": ("p.png", data)}, data={"request": options})
    assert uploaded.status_code == 200, uploaded.text
    plain = client.post(
        "/v1/segment", json={"image": photo_b64, "boxes": [[20, 15, 110, 80]], "output_formats": ["rle", "png"]}
    )
    assert uploaded.json()["results"] == plain.json()["results"]


def test_request_id_is_honoured_or_replaced(client: TestClient, photo_b64: str) -> None:
    given = client.post(
        "/v1/segment/box", json={"image": photo_b64, "box": [1, 1, 50, 50]}, headers={"X-Request-ID": "trace-42.a:b"}
    )
    assert given.headers["X-Request-ID"] == "trace-42.a:b" == given.json()["request_id"]
    unsafe = client.get("/v1/healthz", headers={"X-Request-ID": "x" * 200})
    assert len(unsafe.headers["X-Request-ID"]) == 32 and unsafe.headers["X-Request-ID"] != "x" * 32


def test_model_is_loaded_from_config_in_the_lifespan(small_sam1_config: dict[str, Any], photo_b64: str) -> None:
    app = create_app(build_config(small_sam1_config))
    assert app.state.service.service is None  # nothing loads before the server starts
    with running(app) as client:
        ready = client.get("/v1/readyz").json()
        assert ready["model_info"]["model"] == "sam_v1" and ready["model_info"]["backend"] == "torch"
        response = client.post("/v1/segment/box", json={"image": photo_b64, "box": [20, 15, 110, 80]})
        assert response.status_code == 200
    assert app.state.service.service is None  # released on shutdown
