"""Point grids and crop boxes for automatic mask generation (the same layout as Meta's generators).

Coordinates: grid points are ``(x, y)`` fractions of a crop's width and height; crop boxes are ``(x0, y0, x1, y1)``
in original-image pixels, half-open (``x1``/``y1`` exclusive).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CropBox", "crop_boxes", "layer_point_grids", "point_grid"]

#: ``(x0, y0, x1, y1)`` in original-image pixels, ``x1``/``y1`` exclusive.
CropBox = tuple[int, int, int, int]


def point_grid(per_side: int) -> np.ndarray:
    """``per_side²`` points at the centres of a ``per_side × per_side`` tiling of the unit square.

    Returns:
        float64 ``[per_side², 2]`` of ``(x, y)``, x varying fastest (row by row from the top).
    """
    half_step = 1 / (2 * per_side)
    centres = np.linspace(half_step, 1 - half_step, per_side)
    xs, ys = np.meshgrid(centres, centres)  # xs varies along axis 1, ys along axis 0
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def layer_point_grids(per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per layer ``0..n_layers``; layer ``i`` has ``per_side // downscale**i`` points per side."""
    return [point_grid(int(per_side / downscale**layer)) for layer in range(n_layers + 1)]


def crop_boxes(size: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[tuple[CropBox, int]]:
    """The whole image, then for each layer ``i = 1..n_layers`` a ``2**i × 2**i`` set of overlapping crops.

    Crops of layer ``i`` overlap by ``int(overlap_ratio * short_side * 2 / 2**i)`` pixels and are listed column by
    column (all rows of the first column first), each ``[x0, y0, min(x0 + w, W), min(y0 + h, H)]``.

    Args:
        size: ``(H, W)`` of the image.

    Returns:
        ``[(crop box, layer), ...]``, the whole image first.
    """
    height, width = size
    short_side = min(height, width)
    boxes: list[tuple[CropBox, int]] = [((0, 0, width, height), 0)]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        starts_x = [int((crop_w - overlap) * i) for i in range(per_side)]
        starts_y = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0 in starts_x:
            for y0 in starts_y:
                boxes.append(((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)), layer))
    return boxes
