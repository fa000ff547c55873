"""Small images with one-pixel boxes through a real server on 127.0.0.1 (issue 15, F1): 200 with a mask, never 500.

The images are the reported cases, drawn so that the packaged demo model's logits put the whole positive region
between two pixels' bilinear taps, which raised ``IndexError`` (HTTP 500) before the fix. Each answer must be the
SDK's mask for the same image (lossless transport), decoded with pycocotools.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg import Segmentor
from perceptra_seg.service import create_app

from .helpers import build_config, free_port, live_server


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _int32_tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.int32)).save(buffer, format="TIFF")  # mode "I"
    return buffer.getvalue()


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _decode(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, Segmentor]]:
    """A live server over the packaged demo model (loopback, ephemeral port) and an SDK Segmentor on the same
    backend."""
    segmentor = Segmentor(model="demo", device="cpu")
    config = build_config(model={"name": "demo"}, runtime={"device": "cpu"}, server={"port": free_port()})
    with live_server(create_app(config, backend=segmentor.backend), config) as base:
        yield base, segmentor


# (encoded body, box, size (H, W)) of the reported cases.
CASES = {
    "png-37x27": (_png(_rgb(27, 37, 11)), [6, 14, 7, 15], (27, 37)),
    "png-6x35": (_png(_rgb(35, 6, 2)), [5, 5, 6, 6], (35, 6)),
    "tiff-int32-4x8": (_int32_tiff(np.random.default_rng(1).integers(0, 65536, (8, 4))), [0, 0, 1, 1], (8, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_segment_box_on_a_small_image_returns_a_mask(demo: tuple[str, Segmentor], case: str) -> None:
    base, segmentor = demo
    body, box, size = CASES[case]
    response = httpx.post(
        base + "/v1/segment/box",
        json={"image": base64.b64encode(body).decode(), "box": box, "output_formats": ["rle"]},
        timeout=60.0,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    mask = _decode(answer["rle"])
    assert mask.shape == size and answer["area"] == int(mask.sum())
    expected = segmentor.segment_from_box(body, box, output_formats=["numpy"]).mask
    np.testing.assert_array_equal(mask, expected)


def test_segment_with_boxes_on_a_narrow_image_returns_every_mask(demo: tuple[str, Segmentor]) -> None:
    """``/v1/segment`` with ``boxes``: the 9-wide × 50-high image, the reported box and one-pixel corner boxes."""
    base, segmentor = demo
    image = _rgb(50, 9, 1)
    boxes = [[8, 0, 9, 49], [0, 0, 1, 1], [8, 49, 9, 50], [0, 49, 1, 50], [8, 0, 9, 1]]
    response = httpx.post(
        base + "/v1/segment",
        json={"image": base64.b64encode(_png(image)).decode(), "boxes": boxes, "output_formats": ["rle"]},
        timeout=60.0,
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = segmentor.segment(image, boxes=boxes, output_formats=["numpy"])
    assert [r["prompt_index"] for r in results] == list(range(len(boxes)))
    for answer, sdk in zip(results, expected, strict=True):
        mask = _decode(answer["rle"])
        assert mask.shape == (50, 9) and answer["area"] == int(mask.sum())
        np.testing.assert_array_equal(mask, sdk.mask)
