"""Prompt-centred windows on large images, checked through the whole pipeline with a box-oracle decoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from perceptra_seg import InvalidInputError, Prompt, Segmentor
from perceptra_seg.utils.tiling import plan_windows, shift_prompt

from ..conftest import BoxOracleBackend

H, W = 4000, 6000
TILING = {"enabled": True, "min_image_side": 2048, "window_size": 1024, "margin": 64, "max_windows": 4}


@pytest.fixture(scope="module")
def large_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _segmentor(family: str = "sam2", **tiling: Any) -> tuple[Segmentor, BoxOracleBackend]:
    backend = BoxOracleBackend(family)
    return Segmentor({"runtime": {"device": "cpu"}, "tiling": {**TILING, **tiling}}, backend=backend), backend


def _region(box: tuple[int, int, int, int], grow: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    region = np.zeros((H, W), dtype=bool)
    region[max(y1 - grow, 0) : y2 + grow, max(x1 - grow, 0) : x2 + grow] = True
    return region


def _hugs(mask: np.ndarray, box: tuple[int, int, int, int], tolerance: int) -> bool:
    """The mask lies inside the box grown by ``tolerance`` and covers the box shrunk by it."""
    return not np.any(mask & ~_region(box, tolerance)) and not np.any(_region(box, -tolerance) & ~mask)


@pytest.mark.parametrize("family", ["sam1", "sam2"])
def test_small_object_is_answered_from_a_window_in_full_image_coordinates(large_image: np.ndarray, family: str) -> None:
    box = (5100, 3500, 5140, 3530)  # 40 × 30 px near the bottom-right corner
    tiled, backend = _segmentor(family)
    result = tiled.segment_from_box(large_image, box=box)
    assert backend.encoded_sizes == [(1024, 1024)]  # one window, encoded at native resolution
    assert result.mask is not None and result.mask.shape == (H, W)
    assert _hugs(result.mask, box, tolerance=3)
    x1, y1, x2, y2 = result.bbox
    assert abs(x1 - box[0]) <= 3 and abs(y1 - box[1]) <= 3 and abs(x2 - box[2]) <= 3 and abs(y2 - box[3]) <= 3

    whole, whole_backend = _segmentor(family, enabled=False)
    coarse = whole.segment_from_box(large_image, box=box)
    assert whole_backend.encoded_sizes == [(H, W)]  # tiling off: the whole image, once
    assert not _hugs(coarse.mask, box, tolerance=3)  # 1024 px for 6000: the box edge moves by ~20 px
    assert _hugs(coarse.mask, box, tolerance=30)


def test_points_map_into_windows(large_image: np.ndarray) -> None:
    tiled, _ = _segmentor()
    result = tiled.segment_from_points(large_image, points=[(300, 3700, 1)])
    ys, xs = np.nonzero(result.mask)
    assert abs(xs.mean() - 300) <= 1.5 and abs(ys.mean() - 3700) <= 1.5  # disc centred on the click


def test_overlapping_prompts_share_a_window_and_the_cache(large_image: np.ndarray) -> None:
    tiled, backend = _segmentor()
    near = [(1000, 1000, 1040, 1040), (1300, 1100, 1350, 1150)]
    far = (5000, 300, 5100, 380)
    results = tiled.segment(large_image, boxes=[*near, far])
    assert len(backend.encoded_sizes) == 2  # near boxes share one window; the far one has its own
    for result, box in zip(results, [*near, far], strict=True):
        assert _hugs(result.mask, box, tolerance=3)
    tiled.segment(large_image, boxes=[*near, far])
    assert len(backend.encoded_sizes) == 2  # windows are cached like whole images


def test_too_many_windows_and_mask_input_are_clear_errors(large_image: np.ndarray) -> None:
    tiled, backend = _segmentor(max_windows=2)
    boxes = [(100, 100, 140, 140), (3000, 100, 3040, 140), (5800, 3800, 5840, 3840)]
    with pytest.raises(InvalidInputError, match="3 tiling windows"):
        tiled.segment(large_image, boxes=boxes)
    with pytest.raises(InvalidInputError, match="mask_input"):
        tiled.segment_from_box(large_image, box=boxes[0], mask_input=np.zeros((256, 256), np.float32))
    assert backend.encoded_sizes == []


def test_below_threshold_tiling_changes_nothing(small_segmentor: Segmentor, photos: dict[str, np.ndarray]) -> None:
    config = small_segmentor.config.model_dump()
    config["tiling"] = {**TILING, "min_image_side": 1024}
    with_tiling = Segmentor(config, backend=small_segmentor.backend)
    image = photos["coffee"]  # 400 × 600: below the threshold
    boxes = [(60, 40, 300, 260), (200, 100, 420, 330)]
    for a, b in zip(with_tiling.segment(image, boxes=boxes), small_segmentor.segment(image, boxes=boxes), strict=True):
        assert np.array_equal(a.mask, b.mask) and a.score == b.score


def test_window_plan_geometry() -> None:
    size = (3000, 5000)
    prompts = [Prompt(box=(10.0, 20.0, 50.0, 60.0)), Prompt(box=(1000.0, 2000.0, 2600.0, 2200.0))]
    first, second = plan_windows(prompts, size, window_size=1024, margin=100, max_windows=8)
    assert (first.x0, first.y0, first.x1, first.y1) == (0, 0, 1024, 1024)  # shifted inside, not cropped
    assert (second.x1 - second.x0, second.y1 - second.y0) == (1800, 1024)  # grows to hold box + margins
    assert second.x0 <= 1000 - 100 and second.x1 >= 2600 + 100
    shifted = shift_prompt(prompts[1], second)
    assert shifted.box == (1000.0 - second.x0, 2000.0 - second.y0, 2600.0 - second.x0, 2200.0 - second.y0)
    small = plan_windows([Prompt(points=((5.0, 5.0, 1),))], (300, 200), window_size=1024, margin=10, max_windows=1)
    assert (small[0].x1, small[0].y1) == (200, 300)  # never larger than the image
