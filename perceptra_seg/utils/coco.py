"""Export segmentation results in the COCO results format (what ``COCO.loadRes`` / ``COCOeval`` read)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pycocotools import mask as mask_utils

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult
from perceptra_seg.utils.masks import mask_to_rle, rle_to_mask

__all__ = ["to_coco_results"]


def to_coco_results(
    results: Iterable[SegmentationResult], *, image_id: int, category_id: int = 1
) -> list[dict[str, Any]]:
    """Convert results of one image to COCO result dicts.

    Each dict is ``{"image_id", "category_id", "segmentation", "score", "bbox", "area"}`` where ``segmentation`` is
    compressed RLE ``{"size": [H, W], "counts": str}`` taken from ``result.rle`` (either form) or, failing that,
    computed from ``result.mask``; ``bbox`` is ``[x, y, width, height]`` (floats, COCO's XYWH) and ``area`` the
    pixel count, both computed from that segmentation so the three always agree. Automatic masks
    (``Segmentor.generate``) also keep their ``stability_score``.

    Raises:
        InvalidInputError: a result carries neither ``rle`` nor ``mask``.
    """
    out: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        rle = _compressed_rle(result, index)
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "segmentation": rle,
                "score": float(result.score),
                "bbox": [float(v) for v in mask_utils.toBbox(_as_bytes_rle(rle))],
                "area": int(mask_utils.area(_as_bytes_rle(rle))),
                **_stability(result),
            }
        )
    return out


def _compressed_rle(result: SegmentationResult, index: int) -> dict[str, Any]:
    if result.rle is not None:
        counts = result.rle.get("counts")
        if isinstance(counts, (str, bytes)):
            rle_to_mask(result.rle)  # validates size and counts before anything reaches pycocotools
            size = [int(s) for s in result.rle["size"]]
            text = counts.decode("ascii") if isinstance(counts, bytes) else counts
            return {"size": size, "counts": text}
        return mask_to_rle(rle_to_mask(result.rle), compressed=True)
    if result.mask is not None:
        return mask_to_rle(result.mask, compressed=True)
    raise InvalidInputError(f"result {index} has neither 'rle' nor 'mask'; request the 'rle' or 'numpy' format")


def _as_bytes_rle(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def _stability(result: SegmentationResult) -> dict[str, float]:
    """``{"stability_score": value}`` when the result has a defined (finite) one, else nothing."""
    value = result.stability_score
    return {} if value is None or not math.isfinite(value) else {"stability_score": float(value)}
