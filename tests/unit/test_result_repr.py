"""``repr(SegmentationResult)`` is a one-line summary, whatever the size of the arrays it carries."""

from __future__ import annotations

import numpy as np

from perceptra_seg.models import SegmentationResult
from perceptra_seg.utils.masks import encode_mask


def _result(height: int, width: int, formats: list[str]) -> SegmentationResult:
    mask = np.zeros((height, width), dtype=bool)
    mask[10:40, 20:70] = True
    encoded = encode_mask(mask, formats)
    return SegmentationResult(
        score=0.93127,
        area=1500,
        bbox=(20, 10, 70, 40),
        latency_ms=12.34,
        prompt_index=2,
        low_res_logits=np.zeros((256, 256), np.float32),
        overlay_png=b"\x89PNG" * 1000,
        **encoded,
    )


def test_repr_is_a_short_summary_for_a_large_mask() -> None:
    result = _result(2000, 3000, ["numpy", "rle", "png", "polygons"])
    text = repr(result)
    assert text == (
        "SegmentationResult(prompt_index=2, shape=(2000, 3000), score=0.9313, area=1500, bbox=(20, 10, 70, 40), "
        "formats=['numpy', 'rle', 'png', 'polygons'], with=['overlay', 'low_res_logits'], latency_ms=12.3)"
    )
    assert str(result) == text and "\n" not in text and "array" not in text and "counts" not in text


def test_repr_without_a_numpy_mask_takes_the_shape_from_the_rle() -> None:
    result = _result(60, 90, ["rle"])
    result.low_res_logits = result.overlay_png = None
    assert repr(result) == (
        "SegmentationResult(prompt_index=2, shape=(60, 90), score=0.9313, area=1500, bbox=(20, 10, 70, 40), "
        "formats=['rle'], latency_ms=12.3)"
    )
    assert result.formats == ["rle"]
