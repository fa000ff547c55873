"""Automatic mask generation ("segment everything"): a grid of point prompts per crop, quality filters, NMS.

Used through :meth:`perceptra_seg.Segmentor.generate`; the pieces (options, grids and crops, exact windowed
upsampling, NMS, the generator loop) are small modules of their own.
"""

from __future__ import annotations

from .generator import generate_masks
from .grids import CropBox, crop_boxes, layer_point_grids, point_grid
from .options import AutoOptions, auto_options
from .records import AutoMask
from .results import to_results

__all__ = [
    "AutoMask",
    "AutoOptions",
    "CropBox",
    "auto_options",
    "crop_boxes",
    "generate_masks",
    "layer_point_grids",
    "point_grid",
    "to_results",
]
