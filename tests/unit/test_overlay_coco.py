"""Overlay rendering and the COCO results exporter (checked with pycocotools' loadRes + COCOeval)."""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult
from perceptra_seg.utils.coco import to_coco_results
from perceptra_seg.utils.masks import mask_area, mask_bbox, mask_to_polygons, mask_to_rle, polygons_to_coco
from perceptra_seg.utils.overlay import mask_color, render_overlay

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# ------------------------------------------------------------------------------------------------- overlay


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def test_overlay_colours_masks_and_leaves_the_rest() -> None:
    image = np.full((60, 80, 3), 128, np.uint8)
    first = np.zeros((60, 80), bool)
    first[10:30, 10:30] = True
    second = np.zeros((60, 80), np.uint8)
    second[35:55, 40:70] = 1
    data = render_overlay(image, [first, second], alpha=0.5, boxes=[(8, 8, 32, 32)], points=[(20, 20, 1), (55, 45, 0)])
    out = _decode_png(data)
    assert out.shape == image.shape
    # inside each mask, away from its contour and the prompts: blended with the mask colour
    np.testing.assert_allclose(out[15, 25], (np.array(mask_color(0)) + 128) / 2, atol=1)
    np.testing.assert_allclose(out[40, 45], (np.array(mask_color(1)) + 128) / 2, atol=1)
    assert mask_color(0) != mask_color(1)
    # the prompt points are drawn in green (foreground) and red (background)
    assert tuple(out[20, 20]) == (0, 255, 0)
    assert tuple(out[45, 55]) == (255, 0, 0)
    # far from masks, boxes and points nothing changes
    for y, x in [(0, 79), (59, 0), (5, 60), (50, 5)]:
        assert tuple(out[y, x]) == (128, 128, 128)
    # the contour is drawn: the border pixels differ from the plain blend inside
    assert not np.array_equal(out[10, 20], out[15, 25])


def test_overlay_without_masks_or_prompts_is_the_image() -> None:
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(render_overlay(image, [])), image)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"masks": [np.zeros((5, 5), bool)]},
        {"masks": [], "alpha": 1.5},
        {"masks": [], "boxes": [(1, 2, 3)]},
        {"masks": [], "points": [(1.0, float("nan"), 1)]},
    ],
)
def test_overlay_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        render_overlay(np.zeros((6, 6, 3), np.uint8), **kwargs)


# ---------------------------------------------------------------------------------------------------- COCO


def _gt_masks() -> list[np.ndarray]:
    first = np.zeros((64, 80), np.uint8)
    cv2.rectangle(first, (5, 5), (35, 40), 1, -1)
    cv2.rectangle(first, (12, 12), (20, 25), 0, -1)  # a hole
    second = np.zeros((64, 80), np.uint8)
    cv2.ellipse(second, (58, 40), (15, 10), 20.0, 0, 360, 1, -1)
    return [first.astype(bool), second.astype(bool)]


def _gt_coco(masks: list[np.ndarray], *, polygons: bool) -> COCO:
    annotations = []
    for index, mask in enumerate(masks, start=1):
        x1, y1, x2, y2 = mask_bbox(mask)
        segmentation = polygons_to_coco(mask_to_polygons(mask)) if polygons else mask_to_rle(mask)
        annotations.append(
            {
                "id": index,
                "image_id": 7,
                "category_id": 3,
                "segmentation": segmentation,
                "area": float(mask_area(mask)),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "iscrowd": 0,
            }
        )
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 7, "width": 80, "height": 64, "file_name": "synthetic.png"}],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "thing"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _results(masks: list[np.ndarray]) -> list[SegmentationResult]:
    first, second = masks
    return [
        SegmentationResult(score=0.9, area=mask_area(first), bbox=mask_bbox(first), mask=first),
        SegmentationResult(
            score=0.8, area=mask_area(second), bbox=mask_bbox(second), rle=mask_to_rle(second, compressed=False)
        ),
    ]


def _average_precision(gt: COCO, detections: list[dict], iou_type: str) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def test_perfect_predictions_score_ap_one() -> None:
    masks = _gt_masks()
    detections = to_coco_results(_results(masks), image_id=7, category_id=3)
    gt = _gt_coco(masks, polygons=False)
    assert _average_precision(gt, detections, "segm") == pytest.approx(1.0)
    assert _average_precision(gt, detections, "bbox") == pytest.approx(1.0)


def test_perfect_prediction_against_polygon_ground_truth() -> None:
    # COCO polygons cannot hold holes, so only the ellipse; our polygons and our RLE must agree under pycocotools
    ellipse = _gt_masks()[1]
    result = SegmentationResult(score=0.7, area=mask_area(ellipse), bbox=mask_bbox(ellipse), mask=ellipse)
    detections = to_coco_results([result], image_id=7, category_id=3)
    assert _average_precision(_gt_coco([ellipse], polygons=True), detections, "segm") == pytest.approx(1.0)


def test_wrong_prediction_scores_below_one() -> None:
    masks = _gt_masks()
    shifted = [np.roll(m, 12, axis=1) for m in masks]
    detections = to_coco_results(_results(shifted), image_id=7, category_id=3)
    assert _average_precision(_gt_coco(masks, polygons=False), detections, "segm") < 0.5


def test_coco_result_fields() -> None:
    masks = _gt_masks()
    compressed = SegmentationResult(score=0.5, area=0, bbox=(0, 0, 0, 0), rle=mask_to_rle(masks[0]))
    records = to_coco_results([*_results(masks), compressed], image_id=7)
    assert len(records) == 3
    for record, mask in zip(records, [*masks, masks[0]], strict=True):
        assert set(record) == {"image_id", "category_id", "segmentation", "score", "bbox", "area"}
        assert record["image_id"] == 7 and record["category_id"] == 1
        assert isinstance(record["segmentation"]["counts"], str)
        assert record["segmentation"]["size"] == [64, 80]
        assert record["area"] == mask_area(mask)
        x1, y1, x2, y2 = mask_bbox(mask)
        assert record["bbox"] == [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
        assert all(type(v) is float for v in record["bbox"])
        assert type(record["score"]) is float


def test_coco_needs_rle_or_mask() -> None:
    with pytest.raises(InvalidInputError, match="neither"):
        to_coco_results([SegmentationResult(score=1.0, area=0, bbox=(0, 0, 0, 0))], image_id=1)
    bad = SegmentationResult(score=1.0, area=0, bbox=(0, 0, 0, 0), rle={"size": [2, 2], "counts": "0"})
    with pytest.raises(InvalidInputError):
        to_coco_results([bad], image_id=1)
