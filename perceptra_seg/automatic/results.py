"""Kept masks of automatic generation → :class:`~perceptra_seg.models.SegmentationResult` in the asked formats."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..cancel import CancelToken, check
from ..config import OutputsConfig
from ..models import SegmentationResult
from ..utils.masks import OutputFormat, encode_outputs
from .records import AutoMask

__all__ = ["to_results"]


def to_results(
    masks: Iterable[AutoMask],
    size: tuple[int, int],
    formats: Sequence[OutputFormat],
    outputs: OutputsConfig,
    model_info: dict[str, Any],
    *,
    request_id: str,
    cancel: CancelToken | None = None,
) -> list[SegmentationResult]:
    """Encode each mask as it arrives (one full-size array at a time); ``prompt_index`` numbers the results.

    Args:
        size: ``(H, W)`` of the image.
        request_id: the call's id, given to every result (``latency_ms`` is the caller's to set).
        cancel: checked before every mask.
    """
    results = []
    for index, record in enumerate(masks):
        check(cancel)
        encoded = encode_outputs(record.mask(size), formats, outputs)
        results.append(
            SegmentationResult(
                score=record.predicted_iou,
                area=record.area,
                bbox=record.bbox,
                model_info=model_info,
                request_id=request_id,
                prompt_index=index,
                stability_score=record.stability_score,
                point_coords=[[record.point[0], record.point[1]]],
                crop_box=record.crop_box,
                **encoded,
            )
        )
    return results
