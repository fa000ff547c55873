"""Prompt normalisation, validation and batching."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from perceptra_seg import InvalidInputError, Prompt
from perceptra_seg.prompts import build_batches, normalize_prompts

SIZE = (100, 200)  # H, W


def _normalize(**kwargs: Any) -> list[Prompt]:
    return normalize_prompts(SIZE, max_prompts=8, max_points=4, mask_size=256, **kwargs)


def test_all_forms_become_prompts_in_order() -> None:
    prompts = _normalize(
        prompts=[{"box": (1, 2, 30, 40), "points": [(5, 6, 1)]}, Prompt(points=((7.0, 8.0, 0),))],
        boxes=[(10, 10, 20, 20), (30, 30, 40, 40)],
        points=[(50, 50, 1), (60, 60, 0)],
    )
    assert [p.box for p in prompts] == [(1, 2, 30, 40), None, (10, 10, 20, 20), (30, 30, 40, 40), None]
    assert prompts[-1].points == ((50, 50, 1), (60, 60, 0))
    assert _normalize(boxes=(1, 2, 3, 4))[0].box == (1, 2, 3, 4)  # a single flat box


def test_boxes_partly_outside_are_clipped() -> None:
    assert _normalize(boxes=[(-10, -5, 250, 50)])[0].box == (0, 0, 200, 50)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one prompt"),
        ({"boxes": [(10, 10, 5, 20)]}, "x1 < x2"),
        ({"boxes": [(10, 10, 20, 10)]}, "y1 < y2"),
        ({"boxes": [(300, 10, 400, 20)]}, "entirely outside"),
        ({"boxes": [(1, 2, 3)]}, "4 numbers"),
        ({"boxes": [(1, 2, float("nan"), 4)]}, "non-finite"),
        ({"boxes": [("a", 2, 3, 4)]}, "must be 4 numbers"),
        ({"points": [(10, 10, 2)]}, "label must be 1"),
        ({"points": [(10, 10)]}, "3 numbers"),
        ({"points": [(201, 10, 1)]}, "outside the 200x100 image"),
        ({"points": [(5, -1, 1)]}, "outside"),
        ({"points": [(1, 1, 1)] * 5}, "at most 4 points"),
        ({"boxes": [(1, 1, 2, 2)] * 9}, "at most 8 prompts"),
        ({"prompts": [{"box": (1, 1, 2, 2), "label": 1}]}, "unknown prompt key"),
        ({"prompts": [{}]}, "needs a box or at least one point"),
        ({"prompts": ["box"]}, "must be a dict or Prompt"),
        ({"prompts": [{"box": (1, 1, 5, 5), "mask_input": np.zeros((64, 64))}]}, "shape \\[256, 256\\]"),
    ],
)
def test_invalid_prompts_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _normalize(**kwargs)


def test_batches_group_by_structure_and_scale_coordinates() -> None:
    prompts = _normalize(
        prompts=[
            {"box": (0, 0, 100, 50)},
            {"points": [(100, 50, 1)]},
            {"box": (100, 50, 200, 100)},
            {"points": [(10, 10, 1), (20, 20, 0)]},
        ]
    )
    batches = build_batches(prompts, SIZE, "sam2")
    assert [indices for indices, _ in batches] == [[0, 2], [1], [3]]
    boxes = batches[0][1].boxes
    assert boxes is not None  # SAM 2 scales x by 1024/W and y by 1024/H
    np.testing.assert_allclose(boxes, [[0, 0, 512, 512], [512, 512, 1024, 1024]])
    sam1 = build_batches(prompts, SIZE, "sam1")  # SAM 1: longest side 1024, same factor on both axes here
    np.testing.assert_allclose(sam1[1][1].points, [[[512, 256]]])
    assert sam1[2][1].labels is not None and sam1[2][1].labels.tolist() == [[1, 0]]
