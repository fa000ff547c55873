"""SAM-HQ parity with the authors' ``segment_anything_hq.SamPredictor``: same checkpoint, photo and prompts → same
masks and scores, with and without ``hq_token_only``, single- and multimask.

A reduced ViT (the SMALL_SAM1 encoder: 2 blocks, 64 wide, one global-attention block) keeps this fast; the prompt
encoder and the HQ mask decoder are full size. A full-size vit_b run is recorded in BENCHMARKS.md / the closing note.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from perceptra_seg import Segmentor

from ..conftest import segment_anything_hq
from .test_parity import CASES, _iou, _reference_predict, _scaled


def _reference(predictor: Any, prompt: dict[str, Any], multimask: bool, hq_token_only: bool) -> Any:
    original = predictor.predict

    def predict(**kwargs: Any) -> Any:
        return original(hq_token_only=hq_token_only, **kwargs)

    predictor.predict = predict
    try:
        return _reference_predict(predictor, prompt, multimask)
    finally:
        predictor.predict = original


@pytest.fixture(scope="module")
def segmentors(small_sam_hq: tuple[Any, Any, dict[str, Any]]) -> dict[bool, Segmentor]:
    """Our Segmentor on the reduced SAM-HQ file, keyed by ``model.hq_token_only``."""
    _, _, config = small_sam_hq
    return {only: Segmentor({**config, "model": {**config["model"], "hq_token_only": only}}) for only in (False, True)}


def test_sam_hq_masks_and_scores_match_reference(
    small_sam_hq: tuple[Any, Any, dict[str, Any]], segmentors: dict[bool, Segmentor], photos: Any
) -> None:
    """Box, points, box+points, each with and without hq_token_only; multimask for the points prompt."""
    model, _, _ = small_sam_hq
    image = photos["coffee"]
    predictor = segment_anything_hq.SamPredictor(model)
    predictor.set_image(image)
    prompts = {name: _scaled(p, image.shape[:2]) for name, p in CASES.items()}
    areas: dict[bool, list[int]] = {False: [], True: []}
    for only, ours in segmentors.items():
        checks = [(name, prompt, False) for name, prompt in prompts.items()] + [("points", prompts["points"], True)]
        for name, prompt, multimask in checks:
            ref_masks, ref_scores = _reference(predictor, prompt, multimask, only)
            (result,) = ours.segment(image, prompts=[prompt], multimask=multimask, output_formats=["numpy"])
            assert len(ref_masks) == 1  # the authors' predictor answers one mask either way
            assert _iou(result.mask, ref_masks[0]) >= 0.99, (name, only, multimask)
            assert abs(result.score - float(ref_scores[0])) <= 1e-3, (name, only, multimask)
            areas[only].append(result.area)
    assert areas[False] != areas[True]  # hq_token_only is read: the HQ mask alone is a different mask


def test_prompts_batched_in_one_decoder_call_match_reference(
    small_sam_hq: tuple[Any, Any, dict[str, Any]], segmentors: dict[bool, Segmentor], photos: Any
) -> None:
    """Four boxes (one decoder batch) and the three prompt kinds in one call, on a second photo."""
    model, _, _ = small_sam_hq
    image = photos["chelsea"]
    height, width = image.shape[:2]
    rng = np.random.default_rng(11)
    boxes = []
    for _ in range(4):
        x1, y1 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        boxes.append((x1, y1, x1 + int(rng.integers(20, width // 2)), y1 + int(rng.integers(20, height // 2))))
    prompts = [{"box": box} for box in boxes] + [_scaled(p, image.shape[:2]) for p in CASES.values()]
    predictor = segment_anything_hq.SamPredictor(model)
    predictor.set_image(image)
    results = segmentors[False].segment(image, prompts=prompts, output_formats=["numpy"])
    assert [r.prompt_index for r in results] == list(range(len(prompts)))
    for result, prompt in zip(results, prompts, strict=True):
        ref_masks, ref_scores = _reference(predictor, prompt, False, False)
        assert _iou(result.mask, ref_masks[0]) >= 0.99, prompt
        assert abs(result.score - float(ref_scores[0])) <= 1e-3


# SAM-HQ vit_tiny: MobileSAM's TinyViT (reduced here: one block per stage; the 160-wide stage-1 output the HQ decoder
# fuses and the 320-wide last stage stay) with the HQ decoder.
SMALL_HQ_TINY_VIT = {"embed_dims": [32, 64, 160, 320], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 5, 10]}


def test_sam_hq_vit_tiny_matches_reference(tmp_path: Any, photos: Any) -> None:
    import torch
    from segment_anything_hq.build_sam import build_sam_vit_t
    from segment_anything_hq.modeling import TinyViT

    from ..conftest import _perturb

    torch.manual_seed(9)
    model = build_sam_vit_t()
    model.image_encoder = TinyViT(
        img_size=1024, window_sizes=[7, 7, 14, 7], drop_path_rate=0.0, layer_lr_decay=0.8, **SMALL_HQ_TINY_VIT
    )
    model = _perturb(model, 9)
    generator = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    model.eval()
    path = tmp_path / "sam_hq_vit_tiny.pth"
    torch.save(model.state_dict(), path)
    model_config = {
        "name": "sam_hq",
        "variant": "vit_tiny",
        "checkpoint_path": str(path),
        "architecture": {"tiny_vit": SMALL_HQ_TINY_VIT},
    }
    ours = Segmentor({"model": model_config, "runtime": {"device": "cpu", "precision": "fp32"}})
    image = photos["coffee"]
    predictor = segment_anything_hq.SamPredictor(model)
    predictor.set_image(image)
    prompts = [_scaled(p, image.shape[:2]) for p in CASES.values()]
    results = ours.segment(image, prompts=prompts, output_formats=["numpy"])
    for result, prompt in zip(results, prompts, strict=True):
        ref_masks, ref_scores = _reference(predictor, prompt, False, False)
        assert _iou(result.mask, ref_masks[0]) >= 0.99, prompt
        assert abs(result.score - float(ref_scores[0])) <= 1e-3
