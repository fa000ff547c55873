"""Parity with Meta's reference predictors: same checkpoint, same photo, same prompts → same masks and scores.

vit_b (SAM 1) and hiera_tiny (SAM 2.1) at full size with random weights, saved in Meta's file format and loaded
through ``Segmentor``; compared with ``SamPredictor`` / ``SAM2ImagePredictor`` on two photographs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perceptra_seg import Segmentor

from ..conftest import build_reference_sam1, build_reference_sam2, reference_modules, save_meta_checkpoint

# Prompts in fractions of (W, H) so they fit every photo: box, positive + negative points, box + points.
BOX = (0.25, 0.2, 0.7, 0.85)
POINTS = [(0.45, 0.5, 1), (0.3, 0.3, 0)]
CASES = {
    "box": {"box": BOX},
    "points": {"points": POINTS},
    "box+points": {"box": BOX, "points": [*POINTS[:1], (0.65, 0.8, 0)]},
}


def _scaled(prompt: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    height, width = size
    out: dict[str, Any] = {}
    if "box" in prompt:
        x1, y1, x2, y2 = prompt["box"]
        out["box"] = (round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height))
    if "points" in prompt:
        out["points"] = [(round(x * width), round(y * height), label) for x, y, label in prompt["points"]]
    return out


def _reference_predict(predictor: Any, prompt: dict[str, Any], multimask: bool) -> tuple[np.ndarray, np.ndarray]:
    kwargs: dict[str, Any] = {"multimask_output": multimask}
    if "box" in prompt:
        kwargs["box"] = np.array(prompt["box"], dtype=np.float32)
    if "points" in prompt:
        kwargs["point_coords"] = np.array([p[:2] for p in prompt["points"]], dtype=np.float32)
        kwargs["point_labels"] = np.array([p[2] for p in prompt["points"]])
    masks, scores, _ = predictor.predict(**kwargs)
    return np.asarray(masks, dtype=bool), np.asarray(scores)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module", params=["sam1_vit_b", "sam2.1_hiera_tiny"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, Segmentor]:
    """(family, reference predictor factory, our Segmentor) for one architecture."""
    segment_anything, sam2_predictor = reference_modules()
    directory: Path = tmp_path_factory.mktemp(request.param)
    if request.param == "sam1_vit_b":
        model = build_reference_sam1("vit_b", seed=3)
        path = save_meta_checkpoint(model, directory / "sam_vit_b_01ec64.pth", sam2=False)
        ours = Segmentor(model="sam_v1", variant="vit_b", device="cpu", precision="fp32", checkpoint_path=path)
        return "sam1", lambda: segment_anything.SamPredictor(model), ours
    model = build_reference_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", seed=4)
    path = save_meta_checkpoint(model, directory / "sam2.1_hiera_tiny.pt", sam2=True)
    ours = Segmentor(model="sam_v2", variant="hiera_tiny", device="cpu", precision="fp32", checkpoint_path=path)
    # the parity below runs through the trimmed Hiera attention (backends/hiera_attention.py)
    assert all(getattr(b.attn, "_perceptra_speedup", False) for b in ours.backend.model.vision_encoder.backbone.blocks)
    return "sam2", lambda: sam2_predictor.SAM2ImagePredictor(model), ours


@pytest.mark.parametrize("photo", ["coffee", "chelsea"])
def test_masks_and_scores_match_reference(pair: Any, photos: dict[str, np.ndarray], photo: str) -> None:
    family, make_predictor, ours = pair
    image = photos[photo]
    predictor = make_predictor()
    predictor.set_image(image)
    prompts = {name: _scaled(p, image.shape[:2]) for name, p in CASES.items()}

    # every prompt kind, one call each, single mask
    for name, prompt in prompts.items():
        ref_masks, ref_scores = _reference_predict(predictor, prompt, multimask=False)
        result = ours.segment(image, prompts=[prompt], output_formats=["numpy"])[0]
        assert result.mask is not None and result.mask.shape == image.shape[:2]
        assert _iou(result.mask, ref_masks[0]) >= 0.99, (family, photo, name)
        assert abs(result.score - float(ref_scores[0])) <= 1e-3, (family, photo, name)

    # all prompts in one call (grouped into decoder batches) give the same answers
    batched = ours.segment(image, prompts=list(prompts.values()), output_formats=["numpy"])
    assert [r.prompt_index for r in batched] == [0, 1, 2]
    for result, prompt in zip(batched, prompts.values(), strict=True):
        ref_masks, ref_scores = _reference_predict(predictor, prompt, multimask=False)
        assert _iou(result.mask, ref_masks[0]) >= 0.99
        assert abs(result.score - float(ref_scores[0])) <= 1e-3

    # multimask: three masks per prompt, in the reference's order
    single_click = {"points": prompts["points"]["points"][:1]}
    ref_masks, ref_scores = _reference_predict(predictor, single_click, multimask=True)
    results = ours.segment(image, prompts=[single_click], multimask=True, output_formats=["numpy"])
    assert len(results) == 3 == len(ref_masks)
    for result, ref_mask, ref_score in zip(results, ref_masks, ref_scores, strict=True):
        assert _iou(result.mask, ref_mask) >= 0.99
        assert abs(result.score - float(ref_score)) <= 1e-3


def test_many_boxes_one_decoder_call_match_reference(pair: Any, photos: dict[str, np.ndarray]) -> None:
    """Ten boxes of one shape go through the decoder in one batch and equal ten separate reference calls."""
    family, make_predictor, ours = pair
    image = photos["coffee"]
    height, width = image.shape[:2]
    rng = np.random.default_rng(7)
    boxes = []
    for _ in range(10):
        x1, y1 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        boxes.append(
            (int(x1), int(y1), int(x1 + rng.integers(20, width // 2)), int(y1 + rng.integers(20, height // 2)))
        )
    predictor = make_predictor()
    predictor.set_image(image)
    results = ours.segment(image, boxes=boxes, output_formats=["numpy"])
    assert len(results) == 10
    for result, box in zip(results, boxes, strict=True):
        ref_masks, ref_scores = _reference_predict(predictor, {"box": box}, multimask=False)
        assert _iou(result.mask, ref_masks[0]) >= 0.99, (family, box)
        assert abs(result.score - float(ref_scores[0])) <= 1e-3
