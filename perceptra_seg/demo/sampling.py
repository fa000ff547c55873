"""Random prompts for training on synthetic scenes: jittered boxes and positive/negative clicks.

Masks are bool ``[H, W]`` (rows ``y``, columns ``x``); boxes are float64 ``(x1, y1, x2, y2)`` with ``x2``/``y2``
exclusive and points float64 ``(x, y)`` in pixel-index coordinates, the SDK's prompt conventions. Every random
choice comes from the caller's :class:`numpy.random.Generator`, so a seeded generator gives the same prompts.
"""

from __future__ import annotations

import cv2
import numpy as np

from .evaluation import box_prompt

__all__ = ["clicks", "jittered_box"]


def _distance(mask: np.ndarray) -> np.ndarray:
    """float32 ``[H, W]`` distance of each mask pixel to the nearest non-mask pixel (image border included)."""
    return cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]


def _pick(rng: np.random.Generator, where: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` of a uniformly chosen true pixel of ``where``."""
    ys, xs = np.nonzero(where)
    i = int(rng.integers(len(xs)))
    return float(xs[i]), float(ys[i])


def jittered_box(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """The mask's tight box ``[4]``, half the time with corner noise (σ 5 % of the box side, clipped at 15 %)."""
    box = np.array(box_prompt(mask), dtype=np.float64)
    if rng.random() < 0.5:
        side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        box = box + np.clip(rng.normal(0.0, 0.05, 4), -0.15, 0.15) * side
    height, width = mask.shape
    box = np.clip(box, 0.0, [width, height, width, height])
    box[2:] = np.maximum(box[2:], box[:2] + 1.0)
    return box


def clicks(rng: np.random.Generator, mask: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` clicks ``[count, 2]`` and int labels ``[count]``: first a positive well inside the mask, then each
    a positive anywhere inside or, half the time, a negative just outside (within 20 % of the mask's extent)."""
    distance = _distance(mask)
    points = [_pick(rng, distance >= max(1.5, 0.25 * float(distance.max())))]
    labels = [1]
    ys, xs = np.nonzero(mask)
    margin_x, margin_y = int(0.2 * (np.ptp(xs) + 1)) + 2, int(0.2 * (np.ptp(ys) + 1)) + 2
    near = np.zeros_like(mask)
    near[max(ys.min() - margin_y, 0) : ys.max() + margin_y, max(xs.min() - margin_x, 0) : xs.max() + margin_x] = True
    outside = near & ~mask
    for _ in range(count - 1):
        if rng.random() < 0.5 or not outside.any():
            points.append(_pick(rng, distance >= 1.0))
            labels.append(1)
        else:
            points.append(_pick(rng, outside))
            labels.append(0)
    return np.array(points), np.array(labels)
