"""The REST service runs the models added after SAM 1/2 (selected by ``model.name``): masks equal the SDK's."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from perceptra_seg import Segmentor
from perceptra_seg.service import create_app
from perceptra_seg.utils.masks import rle_to_mask

from .helpers import build_config, running


def test_segment_box_on_sam_hq_equals_the_sdk(
    small_sam_hq: tuple[Any, Any, dict[str, Any]], photos: dict[str, np.ndarray]
) -> None:
    _, _, config = small_sam_hq
    photo = np.asarray(Image.fromarray(photos["coffee"]).resize((160, 100)))
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    box = [20.0, 15.0, 110.0, 80.0]
    with running(create_app(build_config(config, model={"hq_token_only": True}))) as client:
        assert client.get("/v1/readyz").json()["model_info"]["model"] == "sam_hq"
        body = {"image": base64.b64encode(buffer.getvalue()).decode(), "box": box, "output_formats": ["rle"]}
        response = client.post("/v1/segment/box", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    sdk = Segmentor({**config, "model": {**config["model"], "hq_token_only": True}})
    expected = sdk.segment_from_box(photo, box, output_formats=["numpy"])
    assert np.array_equal(rle_to_mask(answer["rle"]), expected.mask)
    assert answer["score"] == pytest.approx(expected.score, abs=1e-6)
    assert answer["model_info"]["model"] == "sam_hq"


def test_segment_points_on_mobile_sam_equals_the_sdk(
    small_mobile_sam: tuple[Any, Any, dict[str, Any]], photos: dict[str, np.ndarray]
) -> None:
    _, _, config = small_mobile_sam
    photo = np.asarray(Image.fromarray(photos["chelsea"]).resize((150, 100)))
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    points = [{"x": 70, "y": 50, "label": 1}, {"x": 10, "y": 90, "label": 0}]
    with running(create_app(build_config(config))) as client:
        body = {"image": base64.b64encode(buffer.getvalue()).decode(), "points": points, "output_formats": ["rle"]}
        response = client.post("/v1/segment/points", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = Segmentor(config).segment_from_points(photo, [(70, 50, 1), (10, 90, 0)], output_formats=["numpy"])
    assert np.array_equal(rle_to_mask(answer["rle"]), expected.mask)
    assert answer["score"] == pytest.approx(expected.score, abs=1e-6)
    assert answer["model_info"]["model"] == "mobile_sam"
