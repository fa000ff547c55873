"""Import Meta's reference packages (``segment-anything``, ``sam2``) without torchvision.

Both reference packages import a handful of torchvision functions at import time. torchvision has no CPU build on
our machines, so :func:`import_reference_packages` installs a minimal stand-in that implements exactly those
functions with torchvision's semantics (PIL bilinear resize for SAM 1, antialiased bilinear tensor resize for
SAM 2, box NMS and box areas for the automatic mask generators), imports the packages, and takes the stand-in
out of ``sys.modules`` again, because transformers probes
``importlib.util.find_spec("torchvision")`` and must not find a spec-less module.
"""

from __future__ import annotations

import importlib
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


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    """torchvision ``box_area``: ``(x2 - x1) * (y2 - y1)`` of ``[N, 4]`` XYXY boxes (dtype kept)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's CPU ``nms``: visit boxes by descending score (stable sort), each kept box suppressing every
    later box whose IoU (float32, ``inter / (area_i + area_j - inter)``) exceeds ``iou_threshold``."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    b = boxes.float().tolist()
    area = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    suppressed = [False] * len(b)
    keep = []
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[position + 1 :]:
            if suppressed[j]:
                continue
            w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = np.float32(np.float32(w) * np.float32(h))
            union = np.float32(np.float32(area[i]) + np.float32(area[j])) - inter
            with np.errstate(invalid="ignore", divide="ignore"):
                if float(np.float32(inter / union)) > iou_threshold:
                    suppressed[j] = True
    return torch.tensor(keep, dtype=torch.int64)


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision ``batched_nms``: NMS within each category; kept indices by descending score."""
    keep = []
    for category in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == category).flatten()
        keep.append(members[_nms(boxes[members], scores[members], iou_threshold)])
    if not keep:
        return torch.zeros(0, dtype=torch.int64)
    kept = torch.cat(keep)
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def _torchvision_standin() -> dict[str, types.ModuleType]:
    """The stand-in modules, keyed by their ``sys.modules`` names."""
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    boxes.batched_nms = _batched_nms  # type: ignore[attr-defined]
    boxes.box_area = _box_area  # type: ignore[attr-defined]
    ops.boxes = boxes  # type: ignore[attr-defined]
    functional.resize = _resize_pil  # type: ignore[attr-defined]
    functional.to_pil_image = _to_pil_image  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    transforms.Resize = _Resize  # type: ignore[attr-defined]
    transforms.Normalize = _Normalize  # type: ignore[attr-defined]
    transforms.ToTensor = _ToTensor  # type: ignore[attr-defined]
    tv.ops = ops  # type: ignore[attr-defined]
    tv.transforms = transforms  # type: ignore[attr-defined]
    return dict(zip(_STANDIN_NAMES, (tv, ops, boxes, transforms, functional), strict=True))


def import_reference_packages() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """Import and return ``segment_anything``, ``sam2.build_sam`` and ``sam2.sam2_image_predictor``."""
    saved = {name: sys.modules.get(name) for name in _STANDIN_NAMES}
    sys.modules.update(_torchvision_standin())
    try:
        import sam2.automatic_mask_generator  # noqa: F401 - imported now, while the stand-in is installed
        import sam2.build_sam as build_sam
        import sam2.sam2_image_predictor as sam2_predictor

        importlib.import_module("sam2.sam2_video_predictor")  # SAM2VideoPredictor, built by sam2.build_sam
        import segment_anything
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return segment_anything, build_sam, sam2_predictor


class _DropPath(torch.nn.Module):
    """timm ``DropPath`` as the reference encoders use it: stochastic depth, the identity in eval mode.

    Only built with ``drop_prob`` 0 by the reference builders (MobileSAM's ``vit_t``); a non-zero rate in training
    mode is refused rather than imitated."""

    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_prob:
            raise NotImplementedError("the timm stand-in has no stochastic depth")
        return x


def _to_2tuple(value: Any) -> tuple[Any, Any]:
    return (value, value) if not isinstance(value, (tuple, list)) else (value[0], value[1])


def _timm_standin() -> dict[str, types.ModuleType]:
    """The three timm names the reference TinyViT imports (``DropPath``, ``to_2tuple``, ``trunc_normal_``) plus
    ``register_model``; timm itself depends on torchvision, which has no CPU build here."""
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = _DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = _to_2tuple  # type: ignore[attr-defined]
    layers.trunc_normal_ = torch.nn.init.trunc_normal_  # type: ignore[attr-defined]
    registry.register_model = lambda fn: fn  # type: ignore[attr-defined]
    models.layers = layers  # type: ignore[attr-defined]
    models.registry = registry  # type: ignore[attr-defined]
    timm.models = models  # type: ignore[attr-defined]
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}


def import_more_reference_packages() -> tuple[types.ModuleType, types.ModuleType]:
    """Import and return ``segment_anything_hq`` (SAM-HQ) and ``mobile_sam`` (MobileSAM).

    Both import the same torchvision functions as ``segment_anything`` plus timm's layers for their TinyViT; both
    stand-ins are installed for the import and removed again afterwards.
    """
    standins = {**_torchvision_standin(), **_timm_standin()}
    saved = {name: sys.modules.get(name) for name in standins}
    sys.modules.update(standins)
    try:
        import mobile_sam
        import segment_anything_hq
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return segment_anything_hq, mobile_sam
