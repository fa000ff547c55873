"""From one mask's low-resolution logits to its stability score, box and mask, touching only where it can be.

Meta's generators upsample every mask's logits to the full crop size, then count pixels above ``threshold ±
offset`` (stability), threshold at ``threshold`` (the mask) and take its box. A bilinear sample is a convex
combination of its source taps, so it can exceed a level only next to a source value that does: evaluating the
upsampled logits inside the bounding window of the source values above the *lowest* of the three levels gives the
same counts, mask and box as the whole-crop computation, at the cost of the mask's extent.

SAM 1 upsamples in two steps (``L → 1024``, crop the padding, then ``→ H × W``); the intermediate is computed only on
its window (plus one tap) and every other intermediate value is replaced by a value below the lowest level, which
cannot change any output above it (see :func:`_intermediate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..preprocessing import INPUT_SIZE
from ..registry import Family

__all__ = ["MaskWindow", "fill_small_low_res", "mask_window"]

#: Stand-in for intermediate values known to be below every level (finite, so zero weights stay zero).
_BELOW = np.float32(-1.0e6)


@dataclass
class MaskWindow:
    """One mask at the resolution of the crop it was predicted on.

    Attributes:
        stability: ``count(logits > t + offset) / count(logits > t - offset)`` in float32 (NaN when nothing exceeds
            ``t - offset``), as Meta's ``calculate_stability_score``.
        box: ``(x1, y1, x2, y2)`` of the mask in crop pixels with ``x2``/``y2`` *inclusive* (the last foreground
            column/row), ``(0, 0, 0, 0)`` for an empty mask (Meta's ``batched_mask_to_box``).
        patch: bool ``[y2 - y1 + 1, x2 - x1 + 1]``, the mask inside ``box`` (``[0, 0]`` when empty).
    """

    stability: float
    box: tuple[int, int, int, int]
    patch: np.ndarray

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.patch))


def _taps(out_len: int, in_len: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0``, ``i1`` and weight of ``i1`` for output positions ``start..stop-1`` of a bilinear resize
    ``in_len → out_len`` with half-pixel centres, in float32 as PyTorch's ``interpolate`` computes them."""
    scale = np.float32(in_len) / np.float32(out_len)
    src = np.maximum(scale * (np.arange(start, stop, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.minimum(src.astype(np.int64), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    return i0, i1, (src - i0.astype(np.float32)).astype(np.float32)


def _covering(out_len: int, in_len: int, first: int, last: int) -> tuple[int, int]:
    """Half-open run of output positions whose bilinear taps touch source indices ``first..last`` (may be empty)."""
    i0, i1, _ = _taps(out_len, in_len, 0, out_len)
    hit = np.flatnonzero((i1 >= first) & (i0 <= last))
    return (0, 0) if hit.size == 0 else (int(hit[0]), int(hit[-1]) + 1)


def _resample(src: np.ndarray, out_size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (half-pixel centres) of float32 ``src`` to ``out_size``, evaluated on ``rows × cols`` only.

    A window of more than a quarter of the output is cut from PyTorch's whole-output ``interpolate`` (what Meta's
    generators compute, and faster there); a smaller one is blended from its own taps.
    """
    (r0, r1), (c0, c1) = rows, cols
    source = torch.from_numpy(np.ascontiguousarray(src, dtype=np.float32))
    if (r1 - r0) * (c1 - c0) * 4 > out_size[0] * out_size[1]:
        full = F.interpolate(source[None, None], size=out_size, mode="bilinear", align_corners=False)[0, 0]
        return np.ascontiguousarray(full[r0:r1, c0:c1].numpy())
    top, bottom, row_weight = (torch.from_numpy(a) for a in _taps(out_size[0], src.shape[0], r0, r1))
    left, right, col_weight = (torch.from_numpy(a) for a in _taps(out_size[1], src.shape[1], c0, c1))
    row_weight = row_weight[:, None]
    blended = source.index_select(0, top) * (1 - row_weight) + source.index_select(0, bottom) * row_weight
    out = blended.index_select(1, left) * (1 - col_weight) + blended.index_select(1, right) * col_weight
    return out.numpy()


def _window(src: np.ndarray, out_size: tuple[int, int], level: float) -> tuple[int, int, int, int] | None:
    """``(r0, r1, c0, c1)`` of the outputs that can exceed ``level``, or ``None`` when none can."""
    above = src > level
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if rows.size == 0:
        return None
    r0, r1 = _covering(out_size[0], src.shape[0], int(rows[0]), int(rows[-1]))
    c0, c1 = _covering(out_size[1], src.shape[1], int(cols[0]), int(cols[-1]))
    return None if r0 == r1 or c0 == c1 else (r0, r1, c0, c1)


def _intermediate(src: np.ndarray, input_size: tuple[int, int], level: float) -> np.ndarray | None:
    """SAM 1's ``L → 1024`` logits cropped to ``input_size``, exact wherever the final resize can exceed ``level``.

    Outside the window of values that can exceed ``level`` (grown by one position, the reach of a bilinear tap) the
    result holds ``_BELOW``: a final output reading any such position has both taps outside the window, where the
    true values are at most ``level``, so it is at most ``level`` either way.
    """
    window = _window(src, (INPUT_SIZE, INPUT_SIZE), level)
    if window is None:
        return None
    height, width = input_size
    r0, r1, c0, c1 = max(window[0] - 1, 0), min(window[1] + 1, height), max(window[2] - 1, 0), min(window[3] + 1, width)
    if r0 >= r1 or c0 >= c1:
        return None
    out = np.full(input_size, _BELOW, dtype=np.float32)
    out[r0:r1, c0:c1] = _resample(src, (INPUT_SIZE, INPUT_SIZE), (r0, r1), (c0, c1))
    return out


def mask_window(
    low_res: np.ndarray,
    crop_size: tuple[int, int],
    input_size: tuple[int, int],
    family: Family,
    *,
    threshold: float,
    offset: float,
) -> MaskWindow:
    """Stability score, box and mask of one mask's logits upsampled to the crop (Meta's order of operations).

    Args:
        low_res: float32 ``[L, L]`` logits in the 1024-input frame.
        crop_size: ``(H, W)`` of the encoded crop.
        input_size: ``(h, w)`` of the crop inside the 1024 input (:attr:`ImageEmbedding.input_size`).
        threshold: the mask's logit threshold; ``offset``: the stability score's shift of it.
    """
    level = min(threshold - offset, threshold + offset, threshold)
    source: np.ndarray | None = np.ascontiguousarray(low_res, dtype=np.float32)
    if family == "sam1" and source is not None:
        source = _intermediate(source, input_size, level)
    window = None if source is None else _window(source, crop_size, level)
    if source is None or window is None:
        return MaskWindow(float("nan"), (0, 0, 0, 0), np.zeros((0, 0), dtype=bool))
    r0, r1, c0, c1 = window
    values = _resample(source, crop_size, (r0, r1), (c0, c1))
    inter = np.count_nonzero(values > threshold + offset)
    union = np.count_nonzero(values > threshold - offset)
    stability = float(np.float32(inter) / np.float32(union)) if union else float("nan")
    mask = values > threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return MaskWindow(stability, (0, 0, 0, 0), np.zeros((0, 0), dtype=bool))
    patch = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = (c0 + int(cols[0]), r0 + int(rows[0]), c0 + int(cols[-1]), r0 + int(rows[-1]))
    return MaskWindow(stability, box, np.ascontiguousarray(patch))


def fill_small_low_res(logits: np.ndarray, threshold: float, max_area: int) -> np.ndarray:
    """SAM 2's clean-up on low-resolution logits ``[L, L]`` (before upsampling): below-threshold regions
    (8-connected) of at most ``max_area`` cells become ``threshold + 10``, above-threshold ones of at most
    ``max_area`` cells become ``threshold - 10``; both are found on the logits as given."""
    out = np.array(logits, dtype=np.float32, copy=True)
    above = logits > threshold
    for region, value in ((~above, threshold + 10.0), (above, threshold - 10.0)):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] <= max_area
        small[0] = False  # label 0 is the other class
        if count > 1 and small.any():
            out[small[labels]] = np.float32(value)
    return out
