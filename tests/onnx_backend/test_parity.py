"""The fp32 ONNX backend answers like the torch backend it was exported from (SAM 1 reduced ViT, SAM 2.1 hiera_tiny).

Thresholds from the issue: mask IoU ≥ 0.98 and scores within 1e-2; the decoder logits themselves agree to 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest

from perceptra_seg.backends.base import PromptBatch

from .conftest import CASES, Exported, iou, scaled


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multimask"])
@pytest.mark.parametrize("photo", ["coffee", "chelsea"])
def test_masks_and_scores_match_torch(
    exported: Exported, photos: dict[str, np.ndarray], photo: str, multimask: bool
) -> None:
    image = photos[photo]
    prompts = [scaled(p, image.shape[:2]) for p in CASES.values()]
    expected = exported.torch.segment(image, prompts=prompts, multimask=multimask, output_formats=["numpy"])
    actual = exported.onnx.segment(image, prompts=prompts, multimask=multimask, output_formats=["numpy"])
    assert len(actual) == len(expected) == len(prompts) * (3 if multimask else 1)
    for want, got in zip(expected, actual, strict=True):
        assert got.prompt_index == want.prompt_index
        assert got.model_info["backend"] == "onnx"
        assert iou(got.mask, want.mask) >= 0.98, (exported.name, photo, got.prompt_index)
        assert abs(got.score - want.score) <= 1e-2, (exported.name, photo, got.prompt_index)


def test_embedding_features_match_torch(exported: Exported, photos: dict[str, np.ndarray]) -> None:
    image = photos["coffee"]
    ours = exported.onnx_backend.encode(image)
    theirs = exported.torch_backend.encode(image)
    assert ours.original_size == theirs.original_size == image.shape[:2]
    assert ours.input_size == theirs.input_size
    assert len(ours.features) == len(theirs.features) == (1 if exported.name == "sam1" else 3)
    for mine, reference in zip(ours.features, theirs.features, strict=True):
        assert isinstance(mine, np.ndarray) and mine.dtype == np.float32
        np.testing.assert_allclose(mine, reference.numpy(), atol=1e-3)
    assert ours.nbytes == sum(f.nbytes for f in ours.features)


def test_many_prompts_in_one_decoder_call(exported: Exported, photos: dict[str, np.ndarray]) -> None:
    """Ten boxes with a point each: one decode() call gives the torch backend's logits and scores for all ten."""
    image = photos["chelsea"]
    rng = np.random.default_rng(11)
    corners = rng.uniform(0, 500, size=(10, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(40, 500, size=(10, 2)).astype(np.float32)], axis=1)
    points = (corners + 20)[:, None, :]
    batch = PromptBatch(points=points, labels=np.ones((10, 1), dtype=np.int64), boxes=boxes)
    ours = exported.onnx_backend.decode(exported.onnx_backend.encode(image), batch, multimask=False)
    theirs = exported.torch_backend.decode(exported.torch_backend.encode(image), batch, multimask=False)
    assert ours.low_res_logits.shape == (10, 1, 256, 256) and ours.iou_scores.shape == (10, 1)
    np.testing.assert_allclose(ours.low_res_logits, theirs.low_res_logits, atol=1e-3)
    np.testing.assert_allclose(ours.iou_scores, theirs.iou_scores, atol=1e-4)


def test_mask_inputs_per_prompt(exported: Exported, photos: dict[str, np.ndarray]) -> None:
    """Each prompt's own mask input is used: a batch of two equals two single torch calls."""
    image = photos["coffee"]
    rng = np.random.default_rng(5)
    masks = (rng.normal(size=(2, 1, 256, 256)) * 4).astype(np.float32)
    boxes = np.array([[100, 120, 600, 700], [300, 50, 900, 500]], dtype=np.float32)
    ours_embedding = exported.onnx_backend.encode(image)
    theirs_embedding = exported.torch_backend.encode(image)
    both = exported.onnx_backend.decode(ours_embedding, PromptBatch(boxes=boxes, mask_inputs=masks), multimask=True)
    without = exported.onnx_backend.decode(ours_embedding, PromptBatch(boxes=boxes), multimask=True)
    for row in range(2):
        single = PromptBatch(boxes=boxes[row : row + 1], mask_inputs=masks[row : row + 1])
        reference = exported.torch_backend.decode(theirs_embedding, single, multimask=True)
        np.testing.assert_allclose(both.low_res_logits[row], reference.low_res_logits[0], atol=1e-3)
        np.testing.assert_allclose(both.iou_scores[row], reference.iou_scores[0], atol=1e-4)
    assert not np.allclose(both.low_res_logits, without.low_res_logits, atol=1e-2)  # the mask input matters
