"""Click refinement over REST: ``return_logits`` gives a mask's low-resolution logits, ``mask_input`` sends them back
— the same masks as the SDK's ``segment_from_points(..., mask_input=previous.low_res_logits)`` (demo model)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg import Segmentor
from perceptra_seg.service import create_app
from perceptra_seg.utils.logits import decode_logits, encode_logits

from .helpers import build_config, running

SAMPLE = Path(__file__).resolve().parents[2] / "perceptra_seg" / "assets" / "sample.png"


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[Any, Segmentor, np.ndarray]]:
    """An in-process app over the demo model, an SDK Segmentor on the same model, and the sample image."""
    app = create_app(build_config(model={"name": "demo"}, runtime={"device": "cpu"}))
    with running(app) as client, Segmentor(model="demo", device="cpu") as sdk:
        yield client, sdk, np.asarray(Image.open(SAMPLE).convert("RGB"))


def decoded(body: dict[str, Any]) -> np.ndarray:
    rle = {"size": body["rle"]["size"], "counts": body["rle"]["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def points(*clicks: tuple[int, int, int]) -> list[dict[str, int]]:
    return [{"x": x, "y": y, "label": label} for x, y, label in clicks]


def test_points_refinement_matches_the_sdk(demo: tuple[Any, Segmentor, np.ndarray]) -> None:
    client, sdk, pixels = demo
    image_id = client.post("/v1/embed", json={"image": base64.b64encode(SAMPLE.read_bytes()).decode()}).json()[
        "image_id"
    ]
    clicks = [(120, 90, 1), (200, 140, 0), (150, 100, 1)]
    previous_rest: dict[str, Any] | None = None
    previous_sdk = None
    for count in range(1, len(clicks) + 1):
        body: dict[str, Any] = {
            "image_id": image_id,
            "points": points(*clicks[:count]),
            "return_logits": True,
            "output_formats": ["rle"],
        }
        if previous_rest is not None:
            body["mask_input"] = previous_rest["low_res_logits"]
        answer = client.post("/v1/segment/points", json=body)
        assert answer.status_code == 200, answer.text
        previous_rest = answer.json()
        expected = sdk.segment_from_points(
            pixels,
            clicks[:count],
            output_formats=["numpy"],
            mask_input=None if previous_sdk is None else previous_sdk.low_res_logits,
        )
        assert np.array_equal(decoded(previous_rest), expected.mask)
        assert previous_rest["score"] == pytest.approx(expected.score, abs=1e-5)
        assert previous_rest["low_res_logits"]["size"] == 128
        logits = decode_logits(128, previous_rest["low_res_logits"]["data"])
        assert expected.low_res_logits is not None and np.allclose(logits, expected.low_res_logits, atol=1e-4)
        previous_sdk = expected
    plain = sdk.segment_from_points(pixels, clicks, output_formats=["numpy"])
    assert not np.array_equal(plain.mask, decoded(previous_rest))  # the logits changed the answer


def test_box_refinement_matches_the_sdk(demo: tuple[Any, Segmentor, np.ndarray]) -> None:
    client, sdk, pixels = demo
    image = base64.b64encode(SAMPLE.read_bytes()).decode()
    first = client.post(
        "/v1/segment/points", json={"image": image, "points": points((330, 220, 1)), "return_logits": True}
    ).json()
    box = [280, 160, 420, 290]
    answer = client.post(
        "/v1/segment/box",
        json={"image": image, "box": box, "mask_input": first["low_res_logits"], "output_formats": ["rle"]},
    )
    assert answer.status_code == 200 and "low_res_logits" not in answer.json()  # not asked for
    seed = sdk.segment_from_points(pixels, [(330, 220, 1)], output_formats=["numpy"])
    expected = sdk.segment_from_box(pixels, box, output_formats=["numpy"], mask_input=seed.low_res_logits)
    assert np.array_equal(decoded(answer.json()), expected.mask)


def test_bad_mask_input_is_refused(demo: tuple[Any, Segmentor, np.ndarray]) -> None:
    client, _, _ = demo
    image = base64.b64encode(SAMPLE.read_bytes()).decode()

    def post(mask_input: Any) -> Any:
        return client.post(
            "/v1/segment/points", json={"image": image, "points": points((10, 10, 1)), "mask_input": mask_input}
        )

    wrong_model_size = encode_logits(np.zeros((64, 64), dtype=np.float32))
    not_finite = encode_logits(np.full((128, 128), np.nan, dtype=np.float32))
    cases = [
        ({"size": 128, "data": "not base64!"}, 400, "invalid_input"),
        ({"size": 128, "data": base64.b64encode(b"\0" * 100).decode()}, 400, "invalid_input"),
        (wrong_model_size, 400, "invalid_input"),
        (not_finite, 400, "invalid_input"),
        ({"size": 0, "data": ""}, 422, "validation_error"),
        ({"size": 128}, 422, "validation_error"),
    ]
    for mask_input, status, code in cases:
        answer = post(mask_input)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (mask_input, answer.text)


def test_logits_codec_round_trips_exactly() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 10, (256, 256)).astype(np.float32)
    encoded = encode_logits(logits)
    assert encoded["size"] == 256
    assert np.array_equal(decode_logits(256, encoded["data"]), logits)
    with pytest.raises(ValueError):
        encode_logits(np.zeros((4, 5), dtype=np.float32))
