"""``POST /v1/segment/auto`` (issue 17): the SDK's automatic masks over REST, with the service's limits."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg import Segmentor
from perceptra_seg.demo.scenes import HELDOUT_SEED, generate_scenes
from perceptra_seg.service import create_app

from .helpers import build_config, running

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

#: Thresholds that keep a fair number of the demo model's masks (27 on the scene below).
LOOSE = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A held-out 256 x 256 scene of the packaged demo model (real learned weights: masks of several sizes)."""
    return generate_scenes(HELDOUT_SEED, 1, [(256, 256)])[0].image


@pytest.fixture(scope="module")
def demo() -> Iterator[Segmentor]:
    with Segmentor(model="demo", device="cpu") as segmentor:
        yield segmentor


@pytest.fixture(scope="module")
def photo_b64(photo: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


DEMO = {"model": {"name": "demo"}, "runtime": {"device": "cpu"}}


@pytest.fixture(scope="module")
def client(demo: Segmentor) -> Iterator[TestClient]:
    config = build_config(DEMO, server={"max_auto_points": 5000})
    with running(create_app(config, backend=demo.backend)) as test_client:
        yield test_client


def _mask(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_auto_masks_equal_the_sdks(client: TestClient, demo: Segmentor, photo: np.ndarray, photo_b64: str) -> None:
    response = client.post("/v1/segment/auto", json={"image": photo_b64, **LOOSE, "output_formats": ["rle"]})
    assert response.status_code == 200, response.text
    got = response.json()["results"]
    want = demo.generate(photo, output_formats=["numpy"], **LOOSE)
    assert len(want) >= 10 and len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        np.testing.assert_array_equal(_mask(mine["rle"]), theirs.mask)
        assert mine["score"] == pytest.approx(theirs.score, abs=1e-6)
        assert mine["stability_score"] == pytest.approx(theirs.stability_score, abs=1e-6)
        assert mine["point_coords"] == theirs.point_coords and mine["crop_box"] == list(theirs.crop_box)
        assert mine["area"] == int(theirs.mask.sum())


def test_auto_by_image_id_and_its_crop_limit(client: TestClient, photo_b64: str) -> None:
    image_id = client.post("/v1/embed", json={"image": photo_b64}).json()["image_id"]
    by_id = client.post("/v1/segment/auto", json={"image_id": image_id, **LOOSE})
    by_image = client.post("/v1/segment/auto", json={"image": photo_b64, **LOOSE})
    assert by_id.status_code == by_image.status_code == 200
    assert [r["rle"] for r in by_id.json()["results"]] == [r["rle"] for r in by_image.json()["results"]]
    crops = client.post("/v1/segment/auto", json={"image_id": image_id, **LOOSE, "crop_n_layers": 1})
    assert crops.status_code == 400 and "crop_n_layers" in crops.json()["error"]["message"]


@pytest.mark.parametrize(
    ("options", "status", "fragment"),
    [
        ({"points_per_side": 64, "crop_n_layers": 1}, 413, "server.max_auto_points"),  # 4096 + 4 x 4096 points
        ({"pred_iou_thresh": 3.0}, 400, "pred_iou_thresh"),
        ({"points_per_side": 0}, 422, "points_per_side"),
        ({"bogus": 1}, 422, "bogus"),
    ],
)
def test_bad_auto_requests_are_refused_before_any_work(
    client: TestClient, photo_b64: str, options: dict[str, Any], status: int, fragment: str
) -> None:
    response = client.post("/v1/segment/auto", json={"image": photo_b64, **options})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


def test_the_largest_legal_request_stops_at_the_deadline(demo: Segmentor, photo_b64: str) -> None:
    config = build_config(DEMO, server={"request_timeout_s": 0.5})
    with running(create_app(config, backend=demo.backend)) as client:
        start = time.perf_counter()
        largest = {"points_per_side": 128, "points_per_batch": 16}  # 16384 points: the default max_auto_points
        response = client.post("/v1/segment/auto", json={"image": photo_b64, **largest})
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        small = client.post("/v1/segment/auto", json={"image": photo_b64, "points_per_side": 2})
        assert small.status_code == 200, small.text  # the slot was freed: the abandoned work stopped
        assert time.perf_counter() - start < 60
