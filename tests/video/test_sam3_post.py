"""SAM 3 video post-processing: resize to the frame, hidden ids, empty masks, the non-overlap rule, checked against
Meta's own non-overlap function where the sam3 package is importable."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perceptra_seg.video.sam3_post import exclusive_masks, postprocess_step

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _step(logits: dict[int, torch.Tensor], scores: dict[int, float], tracker: dict[int, float], suppressed: set[int]):
    return SimpleNamespace(
        obj_id_to_mask=logits, obj_id_to_score=scores, obj_id_to_tracker_score=tracker, suppressed_obj_ids=suppressed
    )


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    low = torch.full((1, h, w), -5.0)
    low[:, y0:y1, x0:x1] = 5.0
    return low


def test_postprocess_hides_resizes_and_separates() -> None:
    logits = {
        7: _box(8, 8, 0, 4, 0, 4),
        3: _box(8, 8, 2, 6, 2, 6),  # overlaps 7; its tracker score is higher, so it wins the overlap
        5: _box(8, 8, 6, 8, 6, 8),  # suppressed on this step
        9: _box(8, 8, 0, 2, 6, 8),  # removed by the hot start
        11: torch.full((1, 8, 8), -3.0),  # empty at frame size
    }
    step = _step(logits, {3: 0.9, 5: 0.8, 7: 0.75, 9: 0.7, 11: 0.95}, {3: 0.6, 7: 0.4, 5: 0.9, 9: 0.9}, {5})
    ids, scores, masks = postprocess_step(step, {9}, 16, 24)
    assert ids.tolist() == [3, 7]
    np.testing.assert_allclose(scores, [0.9, 0.75])
    assert masks.shape == (2, 16, 24) and masks.dtype == bool
    full = F.interpolate(torch.cat([logits[3], logits[7]])[:, None], size=(16, 24), mode="bilinear")[:, 0] > 0
    assert np.array_equal(masks[0], full[0].numpy())
    assert np.array_equal(masks[1], (full[1] & ~full[0]).numpy())
    assert not (masks[0] & masks[1]).any() and masks[1].any()


def test_postprocess_without_objects() -> None:
    ids, scores, masks = postprocess_step(_step({}, {}, {}, set()), (), 5, 6)
    assert ids.shape == (0,) and scores.shape == (0,) and masks.shape == (0, 5, 6)


def test_exclusive_masks_ties_and_zero_scores() -> None:
    masks = torch.ones(3, 2, 2, dtype=torch.bool)
    kept = exclusive_masks(masks, torch.tensor([0.5, 0.5, 0.1]))
    assert kept[0].all() and not kept[1:].any()  # a tie goes to the first
    kept = exclusive_masks(masks, torch.tensor([0.0, 0.0, 0.0]))
    assert not kept.any()  # no score above 0: nobody keeps the pixel


def test_exclusive_masks_match_meta() -> None:
    from ..reference_sam3 import import_sam3

    import_sam3()  # installs the stand-ins Meta's modules need while they are imported
    predictor = sys.modules["sam3.model.sam3_tracking_predictor"].Sam3TrackerPredictor
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 1, 12, 10, generator=generator) > 0.4
    scores = torch.tensor([0.3, 0.8, 0.8, 0.1, 0.0])
    # Meta's post-processing calls it on bool masks with the tracker scores and background 0.
    meta = predictor.__new__(predictor)._apply_object_wise_non_overlapping_constraints(
        masks, scores[:, None], background_value=0
    )
    assert torch.equal(exclusive_masks(masks[:, 0], scores), (meta > 0)[:, 0])
