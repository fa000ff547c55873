"""``Segmentor.generate`` on the ONNX backend gives the torch backend's masks (the reduced SAM 1 export)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .conftest import Exported, iou

#: Random-weight masks are faint and cover most of the image: no IoU filter, NMS off, a narrow stability band.
OPTIONS = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_offset": 0.05,
    "stability_score_thresh": 0.3,
    "box_nms_thresh": 1.0,
}


def test_onnx_generate_matches_torch(sam1_export: Exported, photos: dict[str, np.ndarray]) -> None:
    image = np.asarray(Image.fromarray(photos["chelsea"]).resize((240, 160), Image.Resampling.BILINEAR))
    on_torch = sam1_export.torch.generate(image, output_formats=["numpy"], **OPTIONS)
    on_onnx = sam1_export.onnx.generate(image, output_formats=["numpy"], **OPTIONS)
    assert len(on_onnx) == len(on_torch) >= 10
    for ours, reference in zip(on_onnx, on_torch, strict=True):
        assert ours.mask is not None and reference.mask is not None
        assert iou(ours.mask, reference.mask) >= 0.98
        assert abs(ours.score - reference.score) <= 1e-3
        assert abs((ours.stability_score or 0.0) - (reference.stability_score or 0.0)) <= 1e-2
        assert ours.point_coords == reference.point_coords
