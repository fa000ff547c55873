"""The REST service runs EdgeTAM (``model.name: edgetam``): masks and scores equal the SDK's."""

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


def test_segment_box_and_points_on_edgetam_equals_the_sdk(
    small_edgetam: tuple[Any, Any, dict[str, Any]], photos: dict[str, np.ndarray]
) -> None:
    _, _, config = small_edgetam
    photo = np.asarray(Image.fromarray(photos["chelsea"]).resize((150, 100)))
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    box = [15.0, 10.0, 120.0, 90.0]
    points = [{"x": 70, "y": 50, "label": 1}, {"x": 10, "y": 90, "label": 0}]
    image = base64.b64encode(buffer.getvalue()).decode()
    with running(create_app(build_config(config))) as client:
        assert client.get("/v1/readyz").json()["model_info"]["model"] == "edgetam"
        by_box = client.post("/v1/segment/box", json={"image": image, "box": box, "output_formats": ["rle"]})
        by_points = client.post(
            "/v1/segment/points", json={"image": image, "points": points, "output_formats": ["rle"]}
        )
    assert by_box.status_code == 200, by_box.text
    assert by_points.status_code == 200, by_points.text
    sdk = Segmentor(config)
    expected_box = sdk.segment_from_box(photo, box, output_formats=["numpy"])
    expected_points = sdk.segment_from_points(photo, [(70, 50, 1), (10, 90, 0)], output_formats=["numpy"])
    for answer, expected in ((by_box.json(), expected_box), (by_points.json(), expected_points)):
        assert np.array_equal(rle_to_mask(answer["rle"]), expected.mask)
        assert answer["score"] == pytest.approx(expected.score, abs=1e-6)
        assert answer["model_info"]["model"] == "edgetam"
