"""Prompts for video tracking: which object, on which frame, with a box, clicks or a mask; or, for SAM 3, a noun
phrase whose every instance is tracked."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError

__all__ = ["VideoPrompt"]

_KEYS = {"frame", "obj_id", "box", "points", "mask", "text"}


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _finite(values: Any, count: int, name: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be {count} numbers, got {values!r}") from None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise InvalidInputError(f"{name} must be {count} finite numbers, got {values!r}")
    return numbers


@dataclass(frozen=True)
class VideoPrompt:
    """One object's prompt on one frame, in pixels of the original frame.

    Attributes:
        frame: 0-based frame index.
        obj_id: the caller's id for the object (any integer; results are keyed by it); ``None`` for a text prompt,
            whose instances get ids from the model.
        box: ``(x1, y1, x2, y2)`` (XYXY, ``x1 < x2``, ``y1 < y2``) or ``None``.
        points: ``((x, y, label), ...)``; label 1 = foreground, 0 = background.
        mask: bool ``[H, W]`` mask of the object on that frame (instead of a box or points), or ``None``.
        text: a noun phrase (SAM 3 only): every instance of it is found and tracked from ``frame`` on. A text prompt
            stands alone (no ``obj_id``, box, points or mask).

    A box and points may be combined; a mask stands alone. A prompt on a frame the object was already tracked on
    corrects the track there (Meta's "refinement click"); a new prompt for an object on a frame replaces that
    object's earlier prompt on the same frame.
    """

    frame: int
    obj_id: int | None
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float, int], ...] = ()
    mask: np.ndarray | None = field(default=None, compare=False)
    text: str | None = None

    def __post_init__(self) -> None:
        if self.frame < 0:
            raise InvalidInputError(f"frame must be >= 0, got {self.frame}")
        if self.text is not None:
            if not isinstance(self.text, str) or not self.text.strip():
                raise InvalidInputError(f"a text prompt must be a non-empty phrase, got {self.text!r}")
            if self.obj_id is not None or self.box is not None or self.points or self.mask is not None:
                raise InvalidInputError(
                    "a text prompt stands alone: no obj_id (the model numbers the instances), box, points or mask"
                )
            return
        if self.obj_id is None:
            raise InvalidInputError("a box, point or mask prompt needs 'obj_id'")
        if self.box is None and not self.points and self.mask is None:
            raise InvalidInputError(
                f"the prompt for object {self.obj_id} on frame {self.frame} has no box, points or mask"
            )
        if self.mask is not None and (self.box is not None or self.points):
            raise InvalidInputError("a mask prompt cannot be combined with a box or points on the same frame")
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            if not (x1 < x2 and y1 < y2):
                raise InvalidInputError(f"box {self.box} must have x1 < x2 and y1 < y2")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | VideoPrompt) -> VideoPrompt:
        """Build from ``{"frame", "obj_id", "box"?, "points"?, "mask"?}`` or ``{"frame", "text"}`` (JSON-like
        values); a ``VideoPrompt`` is returned as is.

        Raises:
            InvalidInputError: a missing or unknown key, a malformed box, point or mask.
        """
        if isinstance(data, VideoPrompt):
            return data
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"a video prompt must be a mapping, got {type(data).__name__}")
        unknown = set(data) - _KEYS
        if unknown:
            raise InvalidInputError(f"unknown video prompt keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        if "text" in data:
            if "frame" not in data:
                raise InvalidInputError("a video prompt needs 'frame'")
            text = data["text"]
            if not isinstance(text, str):
                raise InvalidInputError(f"a text prompt must be a string, got {type(text).__name__}")
            extra = sorted(set(data) - {"frame", "text"})
            if extra:
                raise InvalidInputError(f"a text prompt stands alone; remove {extra}")
            return cls(frame=_integer(data["frame"], "frame"), obj_id=None, text=text)
        for key in ("frame", "obj_id"):
            if key not in data:
                raise InvalidInputError(f"a video prompt needs {key!r}")
        box = data.get("box")
        points_in = data.get("points") or ()
        points = []
        for point in points_in:
            if not isinstance(point, (list, tuple)) or len(point) != 3:
                raise InvalidInputError(f"a point must be (x, y, label), got {point!r}")
            x, y = _finite(point[:2], 2, "point coordinates")
            label = _integer(point[2], "a point label")
            if label not in (0, 1):
                raise InvalidInputError(f"a point label must be 1 (foreground) or 0 (background), got {label}")
            points.append((x, y, label))
        mask = data.get("mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 2 or mask.dtype.kind not in "biuf":
                raise InvalidInputError(f"a mask prompt must be a [H, W] array, got {mask.dtype} {mask.shape}")
            mask = mask.astype(bool)
        return cls(
            frame=_integer(data["frame"], "frame"),
            obj_id=_integer(data["obj_id"], "obj_id"),
            box=None if box is None else _finite(box, 4, "box"),  # type: ignore[arg-type]
            points=tuple(points),
            mask=mask,
        )

    def check_fits(self, num_frames: int, height: int, width: int) -> None:
        """Raise :class:`InvalidInputError` unless the prompt lies inside a video of that length and frame size."""
        if self.frame >= num_frames:
            raise InvalidInputError(f"frame {self.frame} is out of range: the video has {num_frames} frames")
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                raise InvalidInputError(f"box {self.box} lies outside the {width}x{height} frame")
        for x, y, _ in self.points:
            if not (0 <= x <= width and 0 <= y <= height):
                raise InvalidInputError(f"point ({x}, {y}) lies outside the {width}x{height} frame")
        if self.mask is not None and self.mask.shape != (height, width):
            raise InvalidInputError(f"mask prompt is {self.mask.shape}, the frames are [{height}, {width}]")
