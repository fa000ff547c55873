"""Draw masks and prompts on an image, for previews and debugging (``return_overlay=True``)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.utils.image_io import array_to_rgb

__all__ = ["mask_color", "render_overlay"]

_GOLDEN = 0.618033988749895
_FOREGROUND_RGB = (0, 255, 0)
_BACKGROUND_RGB = (255, 0, 0)
_BOX_RGB = (255, 255, 0)
_OUTLINE_RGB = (255, 255, 255)


def mask_color(index: int) -> tuple[int, int, int]:
    """Distinct saturated RGB colour for the ``index``-th mask (hues spaced by the golden ratio)."""
    hue = (0.6 + index * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


def render_overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    *,
    alpha: float = 0.5,
    boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
    points: Sequence[Sequence[float]] | np.ndarray | None = None,
) -> bytes:
    """Render masks and prompts over an image and return it as PNG bytes (RGB, same ``W x H`` as the image).

    Args:
        image: ``[H, W, 3]`` RGB ``uint8`` (any array :func:`~perceptra_seg.utils.image_io.array_to_rgb` accepts).
        masks: each ``[H, W]``, nonzero = foreground. Mask ``i`` is blended in :func:`mask_color` ``(i)`` with
            weight ``alpha`` and its contour is drawn in the same colour.
        alpha: blend weight of the mask colour, in ``[0, 1]``.
        boxes: prompt boxes ``[N, 4]`` as ``(x1, y1, x2, y2)`` in pixels, drawn as yellow rectangles.
        points: prompt points ``[N, 3]`` as ``(x, y, label)``; label 1 (foreground) green, 0 (background) red,
            drawn as filled dots with a white rim.

    Raises:
        InvalidInputError: a mask of another size, ``alpha`` outside ``[0, 1]``, malformed boxes or points.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha must lie in [0, 1]; got {alpha}")
    canvas = array_to_rgb(np.asarray(image)).copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    for index, mask in enumerate(masks):
        m = np.asarray(mask)
        if m.shape != (height, width):
            raise InvalidInputError(f"mask {index} has shape {list(m.shape)}; expected {[height, width]}")
        fg = m != 0
        color = np.array(mask_color(index), dtype=np.float64)
        blended = canvas[fg].astype(np.float64) * (1.0 - alpha) + color * alpha
        canvas[fg] = np.rint(blended).astype(np.uint8)
        contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, mask_color(index), thickness, lineType=cv2.LINE_AA)
    for box in _rows(boxes, 4, "boxes"):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), _BOX_RGB, thickness + 1, lineType=cv2.LINE_AA)
    radius = max(3, round(min(height, width) / 100))
    for x, y, label in _rows(points, 3, "points"):
        center = (round(float(x)), round(float(y)))
        fill = _FOREGROUND_RGB if int(label) == 1 else _BACKGROUND_RGB
        cv2.circle(canvas, center, radius, fill, -1, lineType=cv2.LINE_AA)
        cv2.circle(canvas, center, radius, _OUTLINE_RGB, 1, lineType=cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise InvalidInputError("could not encode the overlay as PNG")
    return encoded.tobytes()


def _rows(values: Any, width: int, name: str) -> list[np.ndarray]:
    if values is None:
        return []
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return []
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != width or not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name} must be finite numbers of shape [N, {width}]; got {list(arr.shape)}")
    return list(arr)
