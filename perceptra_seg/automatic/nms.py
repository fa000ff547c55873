"""Greedy box non-maximum suppression and the crop-edge test, in torch (no torchvision).

Boxes here are Meta's mask boxes: ``(x1, y1, x2, y2)`` with ``x2``/``y2`` the last foreground column/row, compared
in float32 with areas ``(x2 - x1) * (y2 - y1)``, exactly as ``torchvision.ops.nms`` compares them.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["box_nms", "near_crop_edge"]

#: Rows of the IoU matrix computed at once (memory: ``_BLOCK × N`` floats).
_BLOCK = 512


def _iou(a: torch.Tensor, area_a: torch.Tensor, b: torch.Tensor, area_b: torch.Tensor) -> torch.Tensor:
    """``[len(a), len(b)]`` IoU in float32, torchvision's formula (NaN for two empty boxes)."""
    left = torch.maximum(a[:, None, 0], b[None, :, 0])
    top = torch.maximum(a[:, None, 1], b[None, :, 1])
    right = torch.minimum(a[:, None, 2], b[None, :, 2])
    bottom = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (right - left).clamp(min=0) * (bottom - top).clamp(min=0)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    Boxes are visited in descending score order (ties keep their input order); each kept box drops every later
    box whose IoU with it is ``> iou_threshold``.

    Args:
        boxes: ``[N, 4]`` ``(x1, y1, x2, y2)``; ``scores``: ``[N]``.

    Returns:
        int64 ``[K]`` indices into ``boxes``, in visiting order.
    """
    count = len(boxes)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    b = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
    s = torch.as_tensor(np.asarray(scores))
    order = torch.sort(s, descending=True, stable=True).indices
    b = b[order]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    removed = np.zeros(count, dtype=bool)
    kept = []
    for start in range(0, count, _BLOCK):  # IoU of a block of rows against every later box: bounded memory
        rows = slice(start, min(start + _BLOCK, count))
        overlaps = _iou(b[rows], areas[rows], b[start:], areas[start:]).double() > iou_threshold
        block = overlaps.numpy()
        for i in range(rows.start, rows.stop):
            if removed[i]:
                continue
            kept.append(i)
            removed[i + 1 :] |= block[i - start, i + 1 - start :]
    return order.numpy()[np.asarray(kept, dtype=np.int64)]


def near_crop_edge(
    boxes: np.ndarray, crop_box: tuple[int, int, int, int], image_box: tuple[int, int, int, int], atol: float = 20.0
) -> np.ndarray:
    """Which boxes (in image pixels) lie within ``atol`` of an edge of their crop that is not an image edge.

    Such masks were likely cut off by the crop; Meta's generators drop them.

    Returns:
        bool ``[N]``.
    """
    b = torch.as_tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 4)
    crop = torch.as_tensor(crop_box, dtype=torch.float32)[None]
    image = torch.as_tensor(image_box, dtype=torch.float32)[None]
    near_crop = torch.isclose(b, crop, atol=atol, rtol=0)
    near_image = torch.isclose(b, image, atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1).numpy()
