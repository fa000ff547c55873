"""Prompt-centred windows for large images.

SAM sees every image at 1024 px on its long side, so on an 8000×6000 photo a 40-pixel object shrinks to 5 pixels.
With tiling on, each prompt is answered from a window around it, cut from the full-resolution image and encoded on
its own; prompts whose windows overlap share one window (one encoder call). Windows are at least ``window_size``
pixels on each side (less only where the image is smaller), grow to hold the prompt plus ``margin`` on every side,
and are shifted, never cropped, to stay inside the image.

Coordinates: windows are ``(x0, y0, x1, y1)`` in original-image pixels, half-open (``x1``/``y1`` exclusive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..exceptions import InvalidInputError
from ..models import Prompt

__all__ = ["Window", "plan_windows", "shift_prompt"]


@dataclass(frozen=True)
class Window:
    """A crop of the image and the prompts it answers.

    Attributes:
        x0, y0, x1, y1: crop bounds in original-image pixels (``x1``/``y1`` exclusive).
        prompt_indices: indices into the request's prompt list, ascending.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    prompt_indices: tuple[int, ...]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the crop."""
        return self.y1 - self.y0, self.x1 - self.x0


Region = tuple[float, float, float, float]


def _region(prompt: Prompt) -> Region:
    """Bounding box ``(x0, y0, x1, y1)`` of a prompt's box and points."""
    xs = [p[0] for p in prompt.points]
    ys = [p[1] for p in prompt.points]
    if prompt.box is not None:
        xs += [prompt.box[0], prompt.box[2]]
        ys += [prompt.box[1], prompt.box[3]]
    return min(xs), min(ys), max(xs), max(ys)


def _span(low: float, high: float, extent: int, window_size: int, margin: int) -> tuple[int, int]:
    """A 1-D window holding ``[low, high]`` plus ``margin``, at least ``window_size`` long, inside ``[0, extent)``."""
    length = min(extent, max(window_size, math.ceil(high - low) + 2 * margin))
    start = round((low + high) / 2 - length / 2)
    start = min(max(start, 0), extent - length)
    return start, start + length


def _window(region: Region, indices: tuple[int, ...], size: tuple[int, int], window_size: int, margin: int) -> Window:
    x0, x1 = _span(region[0], region[2], size[1], window_size, margin)
    y0, y1 = _span(region[1], region[3], size[0], window_size, margin)
    return Window(x0, y0, x1, y1, indices)


def _overlap(a: Window, b: Window) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def plan_windows(
    prompts: Sequence[Prompt], size: tuple[int, int], *, window_size: int, margin: int, max_windows: int
) -> list[Window]:
    """Assign every prompt to a window; overlapping windows are merged until none overlap.

    Args:
        prompts: validated prompts in original-image pixels.
        size: ``(H, W)`` of the image.

    Raises:
        InvalidInputError: more than ``max_windows`` distinct windows are needed.
    """
    groups: list[tuple[Region, tuple[int, ...]]] = [(_region(p), (i,)) for i, p in enumerate(prompts)]
    windows = [_window(r, idx, size, window_size, margin) for r, idx in groups]
    merged = True
    while merged:
        merged = False
        for a in range(len(windows)):
            for b in range(a + 1, len(windows)):
                if _overlap(windows[a], windows[b]):
                    (ra, ia), (rb, ib) = groups[a], groups[b]
                    union = (min(ra[0], rb[0]), min(ra[1], rb[1]), max(ra[2], rb[2]), max(ra[3], rb[3]))
                    groups[a] = (union, tuple(sorted(ia + ib)))
                    windows[a] = _window(union, groups[a][1], size, window_size, margin)
                    del groups[b], windows[b]
                    merged = True
                    break
            if merged:
                break
    if len(windows) > max_windows:
        raise InvalidInputError(
            f"these prompts need {len(windows)} tiling windows, more than tiling.max_windows={max_windows}; "
            "send fewer or closer prompts, or raise the limit"
        )
    return sorted(windows, key=lambda w: w.prompt_indices[0])


def shift_prompt(prompt: Prompt, window: Window) -> Prompt:
    """The prompt in the window's pixel coordinates (boxes clipped to the window)."""
    if prompt.mask_input is not None:
        raise InvalidInputError("mask_input refers to whole-image logits and cannot be used with tiling windows")
    dx, dy = window.x0, window.y0
    height, width = window.size
    box = None
    if prompt.box is not None:
        x1, y1, x2, y2 = prompt.box
        box = (max(x1 - dx, 0.0), max(y1 - dy, 0.0), min(x2 - dx, float(width)), min(y2 - dy, float(height)))
    points = tuple((x - dx, y - dy, label) for x, y, label in prompt.points)
    return replace(prompt, box=box, points=points)
