"""Import Meta's reference packages (``segment-anything``, ``sam2``) without torchvision.

Both reference packages import a handful of torchvision functions at import time. torchvision has no CPU build on
our machines, so :func:`import_reference_packages` installs a minimal stand-in that implements exactly those
functions with torchvision's semantics (PIL bilinear resize for SAM 1, antialiased bilinear tensor resize for
SAM 2), imports the packages, and takes the stand-in out of ``sys.modules`` again, because transformers probes
``importlib.util.find_spec("torchvision")`` and must not find a spec-less module.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

_STANDIN_NAMES = (
    "torchvision",
    "torchvision.ops",
    "torchvision.ops.boxes",
    "torchvision.transforms",
    "torchvision.transforms.functional",
)


class _Resize(torch.nn.Module):
    """torchvision ``Resize(size)`` on a CHW float tensor: bilinear with antialias (torchvision's default)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = [int(size[0]), int(size[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.unsqueeze(0), size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]


class _Normalize(torch.nn.Module):
    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _ToTensor:
    def __call__(self, image: Any) -> torch.Tensor:
        array = np.asarray(image)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float() / 255.0


def _to_pil_image(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image)


def _resize_pil(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    height, width = size
    return image.resize((width, height), Image.BILINEAR)


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("this torchvision function is not provided by the test stand-in")


def import_reference_packages() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """Import and return ``segment_anything``, ``sam2.build_sam`` and ``sam2.sam2_image_predictor``."""
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    boxes.batched_nms = _unused  # type: ignore[attr-defined]
    boxes.box_area = _unused  # type: ignore[attr-defined]
    ops.boxes = boxes  # type: ignore[attr-defined]
    functional.resize = _resize_pil  # type: ignore[attr-defined]
    functional.to_pil_image = _to_pil_image  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    transforms.Resize = _Resize  # type: ignore[attr-defined]
    transforms.Normalize = _Normalize  # type: ignore[attr-defined]
    transforms.ToTensor = _ToTensor  # type: ignore[attr-defined]
    tv.ops = ops  # type: ignore[attr-defined]
    tv.transforms = transforms  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in _STANDIN_NAMES}
    sys.modules.update(dict(zip(_STANDIN_NAMES, (tv, ops, boxes, transforms, functional), strict=True)))
    try:
        import sam2.build_sam as build_sam
        import sam2.sam2_image_predictor as sam2_predictor
        import segment_anything
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return segment_anything, build_sam, sam2_predictor
