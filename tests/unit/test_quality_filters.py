"""Mask quality filters on prompted masks (issue 17): every result carries a stability score computed as Meta's
automatic generators define it, and ``min_score`` / ``min_stability`` drop masks per call or by config."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils.amg import calculate_stability_score

from perceptra_seg import Segmentor
from perceptra_seg.exceptions import InvalidInputError, NotFoundError
from perceptra_seg.preprocessing import logits_to_mask, mask_and_stability, resized_input_size

POINT = [(60.0, 40.0, 1)]


def _full_upsample(logits: np.ndarray, size: tuple[int, int], family: str) -> torch.Tensor:
    """The whole-image upsampling of Meta's predictors (SAM 1: to 1024, crop the padding, to the image)."""
    tensor = torch.from_numpy(logits)[None, None]
    if family == "sam1":
        input_h, input_w = resized_input_size(size, "sam1")
        tensor = F.interpolate(tensor, (1024, 1024), mode="bilinear", align_corners=False)[..., :input_h, :input_w]
    return F.interpolate(tensor, size, mode="bilinear", align_corners=False)[0, 0]


@pytest.mark.parametrize("family", ["sam1", "sam2"])
@pytest.mark.parametrize("size", [(90, 130), (300, 200), (37, 1000)])
def test_stability_equals_metas_definition_on_the_whole_image(family: str, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    logits = (rng.normal(0, 3, (256, 256)) + np.linspace(-8, 6, 256)[None, :]).astype(np.float32)
    input_size = resized_input_size(size, family)  # type: ignore[arg-type]
    for threshold, offset in ((0.0, 1.0), (0.5, 2.0)):
        mask, stability = mask_and_stability(logits, size, input_size, family, threshold, offset)  # type: ignore[arg-type]
        full = _full_upsample(logits, size, family)
        want = float(calculate_stability_score(full[None], threshold, offset)[0])
        assert stability == pytest.approx(want, abs=1e-4)  # float32 bilinear taps: PyTorch's and ours round apart
        decided = (full - threshold).abs().numpy() > 1e-4
        np.testing.assert_array_equal(mask[decided], (full > threshold).numpy()[decided])
        np.testing.assert_array_equal(mask, logits_to_mask(logits, size, input_size, family, threshold))  # type: ignore[arg-type]
    empty, undefined = mask_and_stability(np.full((256, 256), -9, np.float32), size, input_size, family, 0.0, 1.0)  # type: ignore[arg-type]
    assert not empty.any() and np.isnan(undefined)


def test_results_carry_stability_and_min_filters_drop_masks(small_segmentor: Segmentor, photos: dict[str, Any]) -> None:
    photo = photos["coffee"]
    everything = small_segmentor.segment(photo, points=POINT, multimask=True, output_formats=["numpy"])
    scores = sorted(r.score for r in everything)
    stabilities = sorted(r.stability_score for r in everything if r.stability_score is not None)
    assert len(everything) == 3 and len(stabilities) >= 2
    kept = small_segmentor.segment(photo, points=POINT, multimask=True, min_score=scores[1])
    assert sorted(r.score for r in kept) == scores[1:]
    stable = small_segmentor.segment(photo, points=POINT, multimask=True, min_stability=stabilities[-1])
    assert [r.stability_score for r in stable] == [stabilities[-1]] * len(stable) and len(stable) >= 1
    best = small_segmentor.segment(photo, points=POINT, multimask=True, strategy="best", min_score=scores[0])
    assert best[0].score == scores[-1]
    with pytest.raises(NotFoundError, match="min_score / min_stability"):
        small_segmentor.segment_from_points(photo, POINT, min_score=scores[-1] + 1.0)
    assert small_segmentor.segment(photo, points=POINT, min_score=scores[-1] + 1.0, strategy="merge") == []
    with pytest.raises(InvalidInputError, match="min_score must be a finite number"):
        small_segmentor.segment(photo, points=POINT, min_score=float("nan"))


def test_config_minimums_apply_and_a_call_overrides_them(small_segmentor: Segmentor, photos: dict[str, Any]) -> None:
    photo = photos["coffee"]
    scores = sorted(r.score for r in small_segmentor.segment(photo, points=POINT, multimask=True))
    config = small_segmentor.config.model_dump()
    config["postprocess"]["min_score"] = scores[-1]
    strict = Segmentor(config, backend=small_segmentor.backend)  # not closed: the backend is the session's
    assert [r.score for r in strict.segment(photo, points=POINT, multimask=True)] == [scores[-1]]
    assert len(strict.segment(photo, points=POINT, multimask=True, min_score=scores[0])) == 3
