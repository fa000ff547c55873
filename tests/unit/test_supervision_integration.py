"""perceptra_seg.integrations.supervision with the real supervision package and the demo model: masks equal the
SDK's, xyxy in supervision's inclusive convention, detector fields kept, and no torchvision import."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceptra_seg import Segmentor
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.integrations.supervision import detections_to_prompts, segment_detections, to_detections
from perceptra_seg.models import SegmentationResult

sv = pytest.importorskip("supervision")  # the [supervision] extra is part of [dev]

SAMPLE = Path(__file__).resolve().parents[2] / "perceptra_seg" / "assets" / "sample.png"
BOXES = np.array([[40.0, 30.0, 200.0, 170.0], [10.5, 10.0, 90.0, 120.25]], dtype=np.float32)


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[Segmentor, np.ndarray]]:
    with Segmentor(model="demo", device="cpu") as segmentor:
        yield segmentor, np.asarray(Image.open(SAMPLE).convert("RGB"))


def test_detector_boxes_in_masks_out(demo: tuple[Segmentor, np.ndarray]) -> None:
    segmentor, pixels = demo
    detections = sv.Detections(
        xyxy=BOXES.copy(),
        confidence=np.array([0.9, 0.4], dtype=np.float32),
        class_id=np.array([3, 7]),
        data={"class_name": np.array(["cat", "dog"])},
    )
    out = segment_detections(segmentor, pixels, detections)
    want = segmentor.segment(pixels, boxes=BOXES.tolist(), output_formats=["numpy"])
    assert out.mask.shape == (2, *pixels.shape[:2]) and out.mask.dtype == bool
    for index, result in enumerate(want):
        assert np.array_equal(out.mask[index], result.mask)
    assert np.allclose(out.data["sam_score"], [r.score for r in want], atol=1e-6)
    assert np.array_equal(out.xyxy, BOXES) and out.class_id.tolist() == [3, 7]  # the detector's fields stay
    assert out.confidence.tolist() == pytest.approx([0.9, 0.4]) and out.data["class_name"].tolist() == ["cat", "dog"]
    assert detections.mask is None  # the input is not modified

    best = segment_detections(segmentor, pixels, detections, multimask=True)
    want_best = [segmentor.segment_from_box(pixels, tuple(b), multimask=True, output_formats=["numpy"]) for b in BOXES]
    for index, result in enumerate(want_best):
        assert np.array_equal(best.mask[index], result.mask)
    assert segment_detections(segmentor, pixels, sv.Detections.empty()).is_empty()


def test_results_to_detections_use_the_inclusive_convention(demo: tuple[Segmentor, np.ndarray]) -> None:
    segmentor, pixels = demo
    results = segmentor.segment(pixels, boxes=BOXES.tolist(), output_formats=["rle"])  # masks from RLE
    detections = to_detections(results, class_id=[1, 2], class_name=["a", "b"])
    masks = np.stack([segmentor.segment_from_box(pixels, tuple(b), output_formats=["numpy"]).mask for b in BOXES])
    assert np.array_equal(detections.mask, masks)
    assert np.array_equal(detections.xyxy, sv.mask_to_xyxy(masks).astype(np.float32))  # supervision's own boxes
    assert detections.confidence.tolist() == pytest.approx([r.score for r in results])
    assert detections.class_id.tolist() == [1, 2] and detections.data["class_name"].tolist() == ["a", "b"]
    assert detections.data["prompt_index"].tolist() == [0, 1]
    auto = segmentor.generate(
        pixels, output_formats=["numpy"], points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    assert len(auto) > 0
    auto_detections = to_detections(auto)
    assert np.allclose(auto_detections.data["stability_score"], [r.stability_score for r in auto])
    assert to_detections([]).is_empty()


def test_tiny_table() -> None:
    empty = SegmentationResult(score=0.1, area=0, bbox=(0, 0, 0, 0), mask=np.zeros((3, 4), dtype=bool))
    dot = np.zeros((3, 4), dtype=bool)
    dot[2, 3] = True
    corner = SegmentationResult(score=0.5, area=1, bbox=(3, 2, 4, 3), mask=dot)
    detections = to_detections([empty, corner])
    assert detections.xyxy.tolist() == [[0, 0, 0, 0], [3, 2, 3, 2]]
    assert detections.xyxy.tolist() == sv.mask_to_xyxy(detections.mask).tolist()
    with pytest.raises(InvalidInputError, match="'numpy' or 'rle'"):
        to_detections([SegmentationResult(score=0.1, area=0, bbox=(0, 0, 0, 0))])
    with pytest.raises(InvalidInputError, match="class_id has 1 entries for 2 results"):
        to_detections([empty, corner], class_id=[1])
    prompts = detections_to_prompts(sv.Detections(xyxy=BOXES.copy()))
    assert [p.box for p in prompts] == [tuple(float(v) for v in b) for b in BOXES]


def test_supervision_does_not_import_torchvision() -> None:
    code = (
        "import sys, numpy as np\n"
        "from perceptra_seg.models import SegmentationResult\n"
        "from perceptra_seg.integrations.supervision import to_detections\n"
        "m = np.ones((2, 2), dtype=bool)\n"
        "to_detections([SegmentationResult(score=1.0, area=4, bbox=(0, 0, 2, 2), mask=m)])\n"
        "assert 'supervision' in sys.modules\n"
        "print('torchvision' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
