"""Automatic mask generation: its pieces against Meta's own functions, and ``Segmentor.generate`` end to end with a
fake decoder (discs around the grid points), options, handles, cancellation and the cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from perceptra_seg import EmbeddedImage, InvalidInputError, Segmentor
from perceptra_seg.automatic import auto_options, crop_boxes, layer_point_grids
from perceptra_seg.automatic.nms import box_nms
from perceptra_seg.automatic.records import clean_small_regions
from perceptra_seg.automatic.upsample import fill_small_low_res, mask_window
from perceptra_seg.cancel import CancelToken, OperationCancelledError
from perceptra_seg.preprocessing import resized_input_size

from ..conftest import BoxOracleBackend, reference_modules
from ..reference_support import _batched_nms


def _meta_amg() -> Any:
    reference_modules()  # the reference packages are imported (with the stand-in) by the conftest
    from segment_anything.utils import amg

    return amg


# ------------------------------------------------------------------ pieces vs Meta's functions


@pytest.mark.parametrize("size", [(1000, 1500), (480, 640), (333, 77)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_and_grids_equal_metas(size: tuple[int, int], layers: int) -> None:
    amg = _meta_amg()
    boxes, layer_index = amg.generate_crop_boxes(size, layers, 512 / 1500)
    ours = crop_boxes(size, layers, 512 / 1500)
    assert [list(b) for b, _ in ours] == boxes and [layer for _, layer in ours] == layer_index
    for theirs, mine in zip(
        amg.build_all_layer_point_grids(12, layers, 2), layer_point_grids(12, layers, 2), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)


def test_box_nms_equals_torchvision_semantics() -> None:
    """Random integer boxes with many equal scores (ties keep input order) against the torchvision stand-in."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        count = int(rng.integers(1, 120))
        corner = rng.integers(0, 200, (count, 2))
        boxes = np.concatenate([corner, corner + rng.integers(0, 80, (count, 2))], axis=1).astype(np.float32)
        scores = rng.integers(0, 5, count).astype(np.float32) / 4
        threshold = float(rng.choice([0.0, 0.3, 0.7, 1.0]))
        expected = _batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(count), threshold)
        np.testing.assert_array_equal(box_nms(boxes, scores, threshold), expected.numpy(), err_msg=str(trial))
    assert box_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.7).size == 0


def _blob_logits(rng: np.random.Generator, side: int = 256) -> np.ndarray:
    """Low-resolution logits with one or two smooth blobs somewhere (values about -8..8)."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    logits = np.full((side, side), -8.0, dtype=np.float32)
    for _ in range(int(rng.integers(1, 3))):
        cy, cx, radius = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(2, side / 3)
        logits = np.maximum(logits, 8.0 - 16.0 * np.hypot(ys - cy, xs - cx) / radius)
    return logits + rng.normal(0, 0.3, logits.shape).astype(np.float32)


def _meta_upsample(logits: np.ndarray, crop: tuple[int, int], input_size: tuple[int, int], family: str) -> torch.Tensor:
    """Meta's predictors' ``postprocess_masks`` for one mask, with PyTorch's ``interpolate``."""
    x = torch.from_numpy(logits)[None, None]
    if family == "sam1":
        x = F.interpolate(x, (1024, 1024), mode="bilinear", align_corners=False)[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, crop, mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("family", ["sam1", "sam2"])
@pytest.mark.parametrize("crop", [(1000, 1500), (200, 300), (60, 90)])
def test_windowed_upsampling_equals_full_size_stability_box_and_mask(family: str, crop: tuple[int, int]) -> None:
    amg = _meta_amg()
    input_size = resized_input_size(crop, family)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    for _ in range(12):
        logits = _blob_logits(rng)
        full = _meta_upsample(logits, crop, input_size, family)
        stability = float(amg.calculate_stability_score(full, 0.0, 1.0)[0])
        mask = (full > 0.0)[0].numpy()
        window = mask_window(logits, crop, input_size, family, threshold=0.0, offset=1.0)
        assert window.stability == pytest.approx(stability, abs=1e-3) or (
            np.isnan(stability) and np.isnan(window.stability)
        )
        expected_box = tuple(int(v) for v in amg.batched_mask_to_box(torch.from_numpy(mask)))
        assert window.box == expected_box
        x1, y1, x2, y2 = window.box
        painted = np.zeros(crop, dtype=bool)
        if window.area:
            painted[y1 : y2 + 1, x1 : x2 + 1] = window.patch
        assert (painted != mask).sum() <= max(2, mask.sum() // 1000)


def test_clean_small_regions_equals_metas() -> None:
    amg = _meta_amg()
    rng = np.random.default_rng(2)
    for _ in range(20):
        noise = rng.random((60, 80)) > rng.uniform(0.3, 0.7)
        mask = F.max_pool2d(torch.from_numpy(noise.astype(np.float32))[None], 3, 1, 1)[0].numpy() > 0
        for area in (5, 40, 400):
            expected, changed_holes = amg.remove_small_regions(mask, area, "holes")
            expected, changed_islands = amg.remove_small_regions(expected, area, "islands")
            ours, changed = clean_small_regions(mask, area)
            np.testing.assert_array_equal(ours, expected)
            assert changed == (changed_holes or changed_islands)


def test_low_res_fill_follows_sam2_semantics() -> None:
    """Holes (border-touching too) and islands of at most ``max_area`` cells flip; larger regions stay."""
    logits = np.full((32, 32), -5.0, dtype=np.float32)
    logits[4:20, 4:20] = 5.0  # a 16×16 object ...
    logits[8:10, 8:10] = -5.0  # ... with a 4-cell hole
    logits[25:27, 25:27] = 5.0  # a 4-cell island
    logits[0, 30:32] = 5.0  # a 2-cell island on the border
    out = fill_small_low_res(logits, 0.0, 4)
    assert (out[8:10, 8:10] == 10.0).all() and (out[25:27, 25:27] == -10.0).all() and (out[0, 30:32] == -10.0).all()
    assert (out[4:8, 4:20] == 5.0).all() and out[31, 0] == -5.0  # the object and the big background are kept
    corner = np.full((32, 32), 5.0, dtype=np.float32)
    corner[0:2, 0:2] = -5.0  # background touching the border, 4 cells: a hole by SAM 2's rule
    assert (fill_small_low_res(corner, 0.0, 4)[0:2, 0:2] == 10.0).all()


# ------------------------------------------------------------------ options


def test_family_defaults_follow_the_reference_generators() -> None:
    assert auto_options("sam1").pred_iou_thresh == 0.88
    assert auto_options("sam2").pred_iou_thresh == 0.8
    options = auto_options("sam2")
    assert (options.points_per_side, options.stability_score_thresh, options.box_nms_thresh) == (32, 0.95, 0.7)
    assert auto_options("sam1", pred_iou_thresh=0.5).pred_iou_thresh == 0.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"points_per_sid": 8}, "unknown option"),
        ({"points_per_side": 0}, "points_per_side"),
        ({"points_per_side": 8.5}, "points_per_side"),
        ({"points_per_side": None}, "points_per_side is required"),
        ({"pred_iou_thresh": 1.5}, "pred_iou_thresh"),
        ({"box_nms_thresh": "high"}, "box_nms_thresh"),
        ({"crop_n_layers": 9}, "crop_n_layers"),
        ({"use_m2m": 1}, "use_m2m"),
        ({"points_per_side": 8, "point_grids": [np.full((4, 2), 0.5)]}, "not both"),
        ({"point_grids": [np.full((4, 2), 1.5)]}, "point_grids"),
        ({"point_grids": [np.full((4, 2), 0.5)], "crop_n_layers": 1}, "one grid per crop layer"),
        ({"points_per_side": 2, "crop_n_layers": 2, "crop_n_points_downscale_factor": 2}, "no grid point"),
        ({"stability_score_offset": float("nan")}, "stability_score_offset"),
    ],
)
def test_bad_options_are_invalid_input(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        auto_options("sam1", **options)


# ------------------------------------------------------------------ Segmentor.generate with a fake decoder


def _segmentor(family: str = "sam2", **sections: Any) -> tuple[Segmentor, BoxOracleBackend]:
    backend = BoxOracleBackend(family)
    return Segmentor({"runtime": {"device": "cpu"}, **sections}, backend=backend), backend


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 255, (300, 400, 3), dtype=np.uint8)


FAKE = {"points_per_side": 6, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.5}


@pytest.mark.parametrize("family", ["sam1", "sam2"])
def test_generate_results_carry_every_field_and_formats(scene: np.ndarray, family: str) -> None:
    """The fake decoder paints a disc (radius 40 in the 1024 frame) around each grid point: one mask per point
    survives NMS (neighbouring discs overlap less than 0.7), each around its point."""
    segmentor, _ = _segmentor(family)
    results = segmentor.generate(scene, output_formats=["numpy", "rle", "polygons"], **FAKE)
    assert len(results) == 36
    assert [r.prompt_index for r in results] == list(range(36)) and len({r.request_id for r in results}) == 1
    for result in results:
        assert result.mask is not None and result.rle is not None and result.polygons
        np.testing.assert_array_equal(mask_utils.decode(result.rle).astype(bool), result.mask)
        ys, xs = np.nonzero(result.mask)
        assert result.area == len(xs) and result.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        ((x, y),) = result.point_coords
        assert result.mask[int(y), int(x)]
        assert result.crop_box == (0, 0, 400, 300) and result.score == pytest.approx(0.9)
        assert 0.5 <= result.stability_score <= 1.0


def test_generate_on_sam3_is_refused_before_any_work(scene: np.ndarray) -> None:
    # SAM 3's tracker head would take a point grid, but no reference generator exists to prove the result against.
    seg, backend = _segmentor("sam3")
    with pytest.raises(InvalidInputError, match="segment_text"):
        seg.generate(scene, points_per_side=4)
    assert backend.encoded_sizes == []


def test_points_per_batch_does_not_change_the_result(scene: np.ndarray) -> None:
    segmentor, _ = _segmentor()
    one = segmentor.generate(scene, output_formats=["rle"], points_per_batch=1, **FAKE)
    wide = segmentor.generate(scene, output_formats=["rle"], points_per_batch=1000, **FAKE)
    assert [r.rle for r in one] == [r.rle for r in wide]


def test_filters_and_nms_are_read(scene: np.ndarray) -> None:
    segmentor, _ = _segmentor()
    assert segmentor.generate(scene, **{**FAKE, "pred_iou_thresh": 0.95}) == []  # the fake predicts 0.9
    assert segmentor.generate(scene, **{**FAKE, "stability_score_offset": 30.0}) == []  # logits are within ±10
    single = segmentor.generate(scene, **{**FAKE, "multimask_output": False})
    assert len(single) == 36  # three identical masks per point collapse to one either way
    dense = {**FAKE, "points_per_side": 16}  # discs 80 px wide (1024 frame) every 64 px: neighbours' boxes overlap
    assert len(segmentor.generate(scene, **dense)) == 256  # box IoU of neighbours is about 0.1
    assert 0 < len(segmentor.generate(scene, **{**dense, "box_nms_thresh": 0.05})) < 256


def test_embedded_handle_gives_the_same_masks(scene: np.ndarray) -> None:
    segmentor, backend = _segmentor()
    handle = segmentor.embed(scene)
    direct = segmentor.generate(scene, output_formats=["rle"], **FAKE)
    via_handle = segmentor.generate(handle, output_formats=["rle"], **FAKE)
    assert [r.rle for r in via_handle] == [r.rle for r in direct]
    assert len(backend.encoded_sizes) == 1  # the handle's embedding served both
    with pytest.raises(InvalidInputError, match="crop_n_layers"):
        segmentor.generate(handle, crop_n_layers=1, **FAKE)
    with pytest.raises(InvalidInputError, match="unknown option"):
        segmentor.generate(EmbeddedImage("x", 4, 4), colour="red")


def test_crops_are_encoded_once_and_cached(scene: np.ndarray) -> None:
    segmentor, backend = _segmentor()
    first = segmentor.generate(scene, output_formats=["rle"], crop_n_layers=1, **FAKE)
    assert len(backend.encoded_sizes) == 5  # the whole image and four crops
    assert {r.crop_box for r in first} >= {(0, 0, 400, 300)}
    again = segmentor.generate(scene, output_formats=["rle"], crop_n_layers=1, **FAKE)
    assert len(backend.encoded_sizes) == 5 and [r.rle for r in again] == [r.rle for r in first]


def test_cancel_stops_between_batches(scene: np.ndarray) -> None:
    segmentor, backend = _segmentor()
    token = CancelToken()
    calls = {"n": 0}
    decode = backend.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            token.cancel("enough")
        return decode(*args, **kwargs)

    backend.decode = counting_decode  # type: ignore[method-assign]
    with pytest.raises(OperationCancelledError, match="enough"):
        segmentor.generate(scene, cancel=token, points_per_batch=4, **FAKE)
    assert calls["n"] == 2  # no decoder call after the token was set


def test_small_region_cleanup_runs_for_sam1(scene: np.ndarray) -> None:
    segmentor, _ = _segmentor("sam1")
    plain = segmentor.generate(scene, output_formats=["numpy"], **FAKE)
    cleaned = segmentor.generate(scene, output_formats=["numpy"], min_mask_region_area=10**6, **FAKE)
    # every disc is smaller than the area: each mask keeps its largest island (itself) and gets its background
    # (smaller than 10**6 too) filled, so every mask becomes the whole image and NMS keeps one
    assert len(plain) == 36 and len(cleaned) == 1 and cleaned[0].mask is not None and cleaned[0].mask.all()
