"""``POST /v1/segment/text`` over a fake SAM 3 backend: phrases, exemplars, ``image_id``, labels, one encoding for
several phrases, and the error codes (parity with Meta's model is tests/parity/test_sam3.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from perceptra_seg.backends.base import ImageEmbedding
from perceptra_seg.concepts.backend import Sam3Backend
from perceptra_seg.concepts.forward import Detections
from perceptra_seg.concepts.request import MAX_PHRASES
from perceptra_seg.service import create_app

from .helpers import FakeBackend, b64_png, build_config, running

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


class FakeConceptBackend(FakeBackend):
    """Three instances per phrase at scores 0.9 / 0.7 / 0.2: the left half, the top half, everything. It stands for
    a sam3 checkpoint without tracker weights: box / point prompts get the real SAM 3 backend's answer
    (``Sam3Backend.check_prompts`` / ``decode`` with no tracker loaded)."""

    family = "sam3"
    decode = Sam3Backend.decode
    check_prompts = Sam3Backend.check_prompts
    _open_tracker = Sam3Backend._open_tracker
    _open = Sam3Backend._open
    model: Any = object()  # "loaded"
    tracker: Any = None  # no tracker weights
    fingerprint = "fake|sam3|test"
    mask_size = 16

    def __init__(self) -> None:
        super().__init__()
        self.detected: list[tuple[str, np.ndarray]] = []

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        embedding = super().encode(image)
        return ImageEmbedding(embedding.original_size, (1008, 1008), features=None, nbytes=4096)

    def detect(self, embedding: ImageEmbedding, phrase: str, exemplars: np.ndarray) -> Detections:
        self.detected.append((phrase, exemplars))
        logits = torch.full((3, 16, 16), -9.0)
        logits[0, :, :8] = 9.0
        logits[1, :8, :] = 9.0
        logits[2] = 9.0
        return Detections(scores=torch.tensor([0.7, 0.9, 0.2]), boxes=torch.zeros(3, 4), mask_logits=logits)


@pytest.fixture
def concept_backend() -> FakeConceptBackend:
    return FakeConceptBackend()


@pytest.fixture
def client(concept_backend: FakeConceptBackend) -> Any:
    with running(create_app(build_config(), backend=concept_backend)) as test_client:
        yield test_client


def _mask(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_one_phrase(client: Any, concept_backend: FakeConceptBackend) -> None:
    response = client.post("/v1/segment/text", json={"image": b64_png(48, 64), "text": "red car"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["label"], r["prompt_index"]) for r in results] == [("red car", 0)] * 2
    assert [r["score"] for r in results] == pytest.approx([0.9, 0.7])
    top, left = _mask(results[0]["rle"]), _mask(results[1]["rle"])
    assert top.shape == (48, 64) and top[:24].all() and not top[24:].any()
    assert left[:, :32].all() and not left[:, 32:].any()
    assert concept_backend.detected[-1][0] == "red car" and concept_backend.detected[-1][1].shape == (0, 5)


def test_several_phrases_share_one_encoding_and_image_id_works(
    client: Any, concept_backend: FakeConceptBackend
) -> None:
    before = concept_backend.encode_calls  # the app's warm-up encodes once
    image_id = client.post("/v1/embed", json={"image": b64_png()}).json()["image_id"]
    body = {"image_id": image_id, "texts": ["cup", "dog"], "threshold": 0.1, "output_formats": ["polygons"]}
    results = client.post("/v1/segment/text", json=body).json()["results"]
    assert [(r["label"], r["prompt_index"]) for r in results] == [("cup", 0)] * 3 + [("dog", 1)] * 3
    assert "polygons" in results[0] and "rle" not in results[0]
    assert concept_backend.encode_calls == before + 1


def test_exemplars_reach_the_model(client: Any, concept_backend: FakeConceptBackend) -> None:
    exemplars = [{"box": [1, 2, 30, 40]}, {"box": [5, 5, 9, 9], "label": 0}]
    response = client.post("/v1/segment/text", json={"image": b64_png(), "exemplars": exemplars})
    assert response.status_code == 200, response.text
    assert all("label" not in r for r in response.json()["results"])  # no phrase: the exemplars define the concept
    phrase, rows = concept_backend.detected[-1]
    assert phrase == "visual" and rows.tolist() == [[1, 2, 30, 40, 1], [5, 5, 9, 9, 0]]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": "  "}, 400, "invalid_input"),
        ({"texts": ["car"] * (MAX_PHRASES + 1)}, 400, "invalid_input"),
        ({}, 400, "invalid_input"),
        ({"text": "car", "exemplars": [{"box": [0, 0, 500, 10]}]}, 400, "invalid_input"),  # outside the image
        ({"text": "car", "texts": ["dog"]}, 422, "validation_error"),
        ({"text": "car", "threshold": 1.5}, 422, "validation_error"),
    ],
)
def test_bad_bodies(client: Any, body: dict[str, Any], status: int, code: str) -> None:
    response = client.post("/v1/segment/text", json={"image": b64_png(), **body})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_model_without_text_prompts(fake_client: Callable[..., Any]) -> None:
    with fake_client() as client:
        response = client.post("/v1/segment/text", json={"image": b64_png(), "text": "red car"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "text_prompts_unsupported"


def test_box_prompts_on_sam3_without_tracker_weights_are_refused(
    client: Any, concept_backend: FakeConceptBackend
) -> None:
    """A sam3 checkpoint without its tracker answers text prompts only: a box prompt is a clear 400 before any
    encoding, not a crash (with the tracker, box prompts are proven in tests/parity/test_sam3_tracker.py)."""
    encoded = concept_backend.encode_calls
    response = client.post("/v1/segment", json={"image": b64_png(), "boxes": [[2, 2, 20, 20]]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert "no tracker weights" in response.json()["error"]["message"]
    assert concept_backend.encode_calls == encoded


def test_the_service_warms_sam3_up_with_a_detector_pass(client: Any, concept_backend: FakeConceptBackend) -> None:
    assert concept_backend.detected[0][0] == "visual" and concept_backend.decode_calls == 0
