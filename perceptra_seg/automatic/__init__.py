"""Automatic mask generation ("segment everything"): a grid of point prompts per crop, quality filters, NMS.

Used through :meth:`perceptra_seg.Segmentor.generate`; the pieces (options, grids and crops, exact windowed
upsampling, NMS, the generator loop) are small modules of their own.
"""

from __future__ import annotations

from typing import Any

from .grids import CropBox, crop_boxes, layer_point_grids, point_grid
from .options import AutoOptions, auto_options

#: Names whose modules need PyTorch (the torch extra), imported on first use so ``import perceptra_seg`` does not.
_LAZY = {"generate_masks": "generator", "AutoMask": "records", "to_results": "results"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
