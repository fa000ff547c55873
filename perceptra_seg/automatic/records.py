"""A kept mask of automatic generation, held compactly, and the SAM 1 small-region clean-up on such masks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .grids import CropBox

__all__ = ["AutoMask", "clean_small_regions", "pack_patch"]


def pack_patch(patch: np.ndarray) -> dict[str, object]:
    """pycocotools compressed RLE of a bool ``[h, w]`` patch (the memory a kept mask holds until it is output)."""
    return dict(mask_utils.encode(np.asfortranarray(patch, dtype=np.uint8)))


@dataclass(frozen=True)
class AutoMask:
    """One mask kept by automatic generation, in original-image pixels.

    The mask itself is stored as the compressed RLE of its bounding box only, so a kept mask costs memory in
    proportion to its outline, not to the image; :meth:`mask` paints it onto a full-size canvas when asked.

    Attributes:
        box: ``(x1, y1, x2, y2)`` with ``x2``/``y2`` the last foreground column/row (inclusive, Meta's box);
            ``(0, 0, 0, 0)`` for an empty mask.
        patch_rle: compressed RLE of the mask inside ``box``.
        area: foreground pixels.
        predicted_iou: the decoder's predicted IoU.
        stability_score: IoU of the mask thresholded at ``mask_threshold ± stability_score_offset``.
        point: ``(x, y)`` of the grid point that produced the mask.
        crop_box: ``(x0, y0, x1, y1)`` of the crop it was predicted on (``x1``/``y1`` exclusive).
    """

    box: tuple[int, int, int, int]
    patch_rle: dict[str, object]
    area: int
    predicted_iou: float
    stability_score: float
    point: tuple[float, float]
    crop_box: CropBox

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x1, y1, x2, y2)`` with ``x2``/``y2`` exclusive (the SDK's convention); ``(0, 0, 0, 0)`` if empty."""
        if self.area == 0:
            return (0, 0, 0, 0)
        x1, y1, x2, y2 = self.box
        return (x1, y1, x2 + 1, y2 + 1)

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        """bool ``[H, W]`` for an image of ``size = (H, W)``."""
        canvas = np.zeros(size, dtype=bool)
        if self.area:
            x1, y1, x2, y2 = self.box
            with warnings.catch_warnings():  # pycocotools' decoder predates NumPy 2's copy keyword and says so
                warnings.simplefilter("ignore", DeprecationWarning)
                patch = mask_utils.decode(self.patch_rle)
            canvas[y1 : y2 + 1, x1 : x2 + 1] = patch.astype(bool)
        return canvas


def _small_components(region: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels of ``region``'s 8-connected components, a flag per label for ``area < min_area`` (label 0 never),
    and each label's area."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    small = areas < min_area
    small[0] = False
    return labels, small, areas


def clean_small_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    """Meta's SAM 1 clean-up of a full-size bool mask: fill every background region (8-connected, border-touching
    ones included) smaller than ``min_area``, then drop every foreground island smaller than ``min_area`` — keeping
    the largest when all are small. Returns the new mask and whether anything changed."""
    changed = False
    labels, small, _ = _small_components(~mask, min_area)
    if small.any():
        mask, changed = mask | small[labels], True
    labels, small, areas = _small_components(mask, min_area)
    if small.any():
        keep = ~small
        keep[0] = False
        if not keep.any():
            keep[1 + int(np.argmax(areas[1:]))] = True
        mask, changed = keep[labels], True
    return mask, changed


def with_mask(record: AutoMask, mask: np.ndarray) -> AutoMask:
    """``record`` carrying a new full-size ``mask`` (box, patch and area recomputed)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return replace(record, box=(0, 0, 0, 0), patch_rle=pack_patch(np.zeros((0, 0), bool)), area=0)
    box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    patch = mask[box[1] : box[3] + 1, box[0] : box[2] + 1]
    return replace(record, box=box, patch_rle=pack_patch(patch), area=int(np.count_nonzero(patch)))
