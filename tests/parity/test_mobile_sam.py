"""MobileSAM parity with the authors' ``mobile_sam.SamPredictor``: same checkpoint, photo and prompts → same masks
and scores. A reduced TinyViT (one block per stage, narrower) keeps this fast; the prompt encoder and mask decoder
are full size. The full-size vit_t run is recorded in the closing note."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from perceptra_seg import Segmentor

from ..conftest import mobile_sam
from .test_parity import CASES, _iou, _reference_predict, _scaled


@pytest.fixture(scope="module")
def ours(small_mobile_sam: tuple[Any, Any, dict[str, Any]]) -> Segmentor:
    return Segmentor(small_mobile_sam[2])


def test_mobile_sam_masks_and_scores_match_reference(
    small_mobile_sam: tuple[Any, Any, dict[str, Any]], ours: Segmentor, photos: Any
) -> None:
    """Box, points, box+points single-mask; the three multimask masks of the points prompt, in the reference order."""
    image = photos["coffee"]
    predictor = mobile_sam.SamPredictor(small_mobile_sam[0])
    predictor.set_image(image)
    prompts = {name: _scaled(p, image.shape[:2]) for name, p in CASES.items()}
    for name, prompt in prompts.items():
        ref_masks, ref_scores = _reference_predict(predictor, prompt, multimask=False)
        (result,) = ours.segment(image, prompts=[prompt], output_formats=["numpy"])
        assert _iou(result.mask, ref_masks[0]) >= 0.99, name
        assert abs(result.score - float(ref_scores[0])) <= 1e-3, name
    ref_masks, ref_scores = _reference_predict(predictor, prompts["points"], multimask=True)
    results = ours.segment(image, prompts=[prompts["points"]], multimask=True, output_formats=["numpy"])
    assert len(results) == 3 == len(ref_masks)
    for result, ref_mask, ref_score in zip(results, ref_masks, ref_scores, strict=True):
        assert _iou(result.mask, ref_mask) >= 0.99
        assert abs(result.score - float(ref_score)) <= 1e-3


def test_prompts_batched_in_one_decoder_call_match_reference(
    small_mobile_sam: tuple[Any, Any, dict[str, Any]], ours: Segmentor, photos: Any
) -> None:
    image = photos["chelsea"]
    height, width = image.shape[:2]
    rng = np.random.default_rng(13)
    boxes = []
    for _ in range(4):
        x1, y1 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        boxes.append((x1, y1, x1 + int(rng.integers(20, width // 2)), y1 + int(rng.integers(20, height // 2))))
    prompts = [{"box": box} for box in boxes] + [_scaled(p, image.shape[:2]) for p in CASES.values()]
    predictor = mobile_sam.SamPredictor(small_mobile_sam[0])
    predictor.set_image(image)
    results = ours.segment(image, prompts=prompts, output_formats=["numpy"])
    for result, prompt in zip(results, prompts, strict=True):
        ref_masks, ref_scores = _reference_predict(predictor, prompt, multimask=False)
        assert _iou(result.mask, ref_masks[0]) >= 0.99, prompt
        assert abs(result.score - float(ref_scores[0])) <= 1e-3
