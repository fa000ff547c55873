"""Normalise and validate prompts, and group them into decoder batches.

Accepted prompt forms (all coordinates in original-image pixels):

* ``prompts=[{"box": (x1, y1, x2, y2), "points": [(x, y, label), ...], "mask_input": logits}, ...]`` or
  :class:`~perceptra_seg.models.Prompt` objects: one object each;
* ``boxes=[(x1, y1, x2, y2), ...]``: each box its own prompt (a single 4-tuple is one box);
* ``points=[(x, y, label), ...]``: all points together form one prompt.

Rules: ``x1 < x2`` and ``y1 < y2``; a box partly outside the image is clipped to it, one entirely outside is an
error; points must lie within ``[0, W] × [0, H]``; labels are 1 (foreground) or 0 (background).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .backends.base import Family, PromptBatch
from .exceptions import InvalidInputError
from .models import BBox, Point, Prompt
from .preprocessing import transform_coords

__all__ = ["build_batches", "normalize_prompts"]

_PROMPT_KEYS = {"box", "points", "mask_input"}


def _numbers(value: Any, count: int, what: str) -> list[float]:
    try:
        items = [float(v) for v in value]
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be {count} numbers, got {value!r}") from None
    if len(items) != count:
        raise InvalidInputError(f"{what} must have {count} numbers, got {len(items)}")
    if not all(math.isfinite(v) for v in items):
        raise InvalidInputError(f"{what} contains a non-finite number: {value!r}")
    return items


def _box(value: Any, size: tuple[int, int]) -> BBox:
    x1, y1, x2, y2 = _numbers(value, 4, "box (x1, y1, x2, y2)")
    if not (x1 < x2 and y1 < y2):
        raise InvalidInputError(f"box {value!r} must have x1 < x2 and y1 < y2 (XYXY pixel coordinates)")
    height, width = size
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise InvalidInputError(f"box {value!r} lies entirely outside the {width}x{height} image")
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


def _point(value: Any, size: tuple[int, int]) -> Point:
    x, y, label = _numbers(value, 3, "point (x, y, label)")
    if label not in (0.0, 1.0):
        raise InvalidInputError(f"point label must be 1 (foreground) or 0 (background), got {label:g}")
    height, width = size
    if not (0 <= x <= width and 0 <= y <= height):
        raise InvalidInputError(f"point ({x:g}, {y:g}) lies outside the {width}x{height} image")
    return (x, y, int(label))


def _mask_input(value: Any, mask_size: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    array = array.reshape(array.shape[-2:]) if array.ndim > 2 and array.size == mask_size * mask_size else array
    if array.shape != (mask_size, mask_size) or not np.isfinite(array).all():
        raise InvalidInputError(
            f"mask_input must be finite low-resolution logits of shape [{mask_size}, {mask_size}] (a result's "
            f"low_res_logits), got {list(array.shape)}"
        )
    return array


def _one(prompt: Prompt | Mapping[str, Any], size: tuple[int, int], max_points: int, mask_size: int) -> Prompt:
    if isinstance(prompt, Prompt):
        box, points, mask = prompt.box, list(prompt.points), prompt.mask_input
    elif isinstance(prompt, Mapping):
        unknown = set(prompt) - _PROMPT_KEYS
        if unknown:
            raise InvalidInputError(f"unknown prompt key(s) {sorted(unknown)}; use box, points, mask_input")
        box, points, mask = prompt.get("box"), list(prompt.get("points") or []), prompt.get("mask_input")
    else:
        raise InvalidInputError(f"a prompt must be a dict or Prompt, got {type(prompt).__name__}")
    if box is None and not points:
        raise InvalidInputError("each prompt needs a box or at least one point")
    if len(points) > max_points:
        raise InvalidInputError(f"a prompt may have at most {max_points} points, got {len(points)}")
    return Prompt(
        box=None if box is None else _box(box, size),
        points=tuple(_point(p, size) for p in points),
        mask_input=None if mask is None else _mask_input(mask, mask_size),
    )


def _box_list(boxes: Any) -> list[Any]:
    array = np.asarray(boxes, dtype=object)
    if array.ndim == 1 and len(array) == 4 and not isinstance(array[0], (Sequence, np.ndarray)):
        return [list(array)]
    return list(boxes)


def normalize_prompts(
    size: tuple[int, int],
    *,
    prompts: Iterable[Prompt | Mapping[str, Any]] | None = None,
    boxes: Any = None,
    points: Any = None,
    max_prompts: int,
    max_points: int,
    mask_size: int,
) -> list[Prompt]:
    """Validate every accepted prompt form against an image of ``size = (H, W)`` and return :class:`Prompt` s.

    ``mask_size`` is the side of the model's low-resolution logits, which a ``mask_input`` must match
    (:attr:`~perceptra_seg.backends.base.Backend.mask_size`).

    Raises:
        InvalidInputError: no prompt, too many prompts or points, malformed or out-of-range coordinates.
    """
    raw: list[Prompt | Mapping[str, Any]] = list(prompts or [])
    if boxes is not None:
        raw.extend({"box": b} for b in _box_list(boxes))
    if points is not None and len(points) > 0:
        raw.append({"points": list(points)})
    if not raw:
        raise InvalidInputError("at least one prompt is required (a box, points, or prompts=[...])")
    if len(raw) > max_prompts:
        raise InvalidInputError(f"at most {max_prompts} prompts per call, got {len(raw)}")
    return [_one(p, size, max_points, mask_size) for p in raw]


def build_batches(
    prompts: Sequence[Prompt], original_size: tuple[int, int], family: Family
) -> list[tuple[list[int], PromptBatch]]:
    """Group prompts of identical structure into decoder batches in model-input coordinates.

    Prompts with the same (box or not, number of points, mask or not) share one decoder call, which gives exactly
    the result of separate calls; mixed structures need separate calls because SAM pads short prompts.

    Returns:
        ``[(prompt indices, batch), ...]``; the batch rows follow the order of the indices.
    """
    groups: dict[tuple[bool, int, bool], list[int]] = {}
    for index, prompt in enumerate(prompts):
        signature = (prompt.box is not None, len(prompt.points), prompt.mask_input is not None)
        groups.setdefault(signature, []).append(index)
    batches = []
    for (has_box, n_points, has_mask), indices in groups.items():
        members = [prompts[i] for i in indices]
        boxes = points = labels = masks = None
        if has_box:
            corners = np.array([p.box for p in members], dtype=np.float64).reshape(-1, 2, 2)
            boxes = transform_coords(corners, original_size, family).reshape(-1, 4)
        if n_points:
            xy = np.array([[pt[:2] for pt in p.points] for p in members], dtype=np.float64)
            points = transform_coords(xy, original_size, family)
            labels = np.array([[pt[2] for pt in p.points] for p in members], dtype=np.int64)
        if has_mask:
            masks = np.stack([p.mask_input for p in members if p.mask_input is not None])[:, None].astype(np.float32)
        batches.append((indices, PromptBatch(points=points, labels=labels, boxes=boxes, mask_inputs=masks)))
    return batches
