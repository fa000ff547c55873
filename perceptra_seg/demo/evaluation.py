"""Measure a segmenter against synthetic ground truth: prompts from masks, IoU and centroid offsets.

A *predictor* is any callable ``predict(image, prompts) -> masks`` taking an RGB ``uint8`` ``[H, W, 3]`` image and
prompts in the SDK's dict form (``{"box": (x1, y1, x2, y2)}`` / ``{"points": [(x, y, label)]}``, pixel
coordinates of the image) and returning one bool ``[H, W]`` mask per prompt, in order. :func:`segmentor_predictor`
wraps a :class:`~perceptra_seg.Segmentor`; the same scenes and metrics can measure any other front end (REST
service, tiling, another backend) through its own predictor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from ..utils.masks import mask_bbox
from .scenes import Scene

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = [
    "ObjectScore",
    "Predictor",
    "PromptKind",
    "box_prompt",
    "centroid_offset",
    "evaluate",
    "interior_point",
    "mask_iou",
    "mean_iou",
    "object_prompts",
    "segmentor_predictor",
]

PromptKind = Literal["box", "point"]
Predictor = Callable[[np.ndarray, list[dict[str, Any]]], list[np.ndarray]]


@dataclass(frozen=True)
class ObjectScore:
    """How well one object was segmented from one prompt.

    Attributes:
        scene: index of the scene in the evaluated sequence.
        index: index of the object in its scene.
        kind: the object's shape kind.
        iou: intersection over union of the predicted and true masks (1.0 when both are empty).
        offset: ``(dx, dy)`` predicted minus true mask centroid, in pixels (``nan`` when either mask is empty).
    """

    scene: int
    index: int
    kind: str
    iou: float
    offset: tuple[float, float]


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two bool ``[H, W]`` masks; two empty masks count as a perfect match."""
    p, t = np.asarray(predicted, bool), np.asarray(truth, bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    union = int(np.logical_or(p, t).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, t).sum()) / union


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return float("nan"), float("nan")
    return float(xs.mean()), float(ys.mean())


def centroid_offset(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(dx, dy)``: centroid of ``predicted`` minus centroid of ``truth``, in pixels (``x`` = column)."""
    (px, py), (tx, ty) = _centroid(np.asarray(predicted, bool)), _centroid(np.asarray(truth, bool))
    return px - tx, py - ty


def box_prompt(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tight ``(x1, y1, x2, y2)`` box of a mask, ``x2``/``y2`` exclusive (the SDK's result ``bbox`` form)."""
    x1, y1, x2, y2 = mask_bbox(mask)
    return float(x1), float(y1), float(x2), float(y2)


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` of the mask pixel farthest from the mask's boundary (pixel-index coordinates).

    The image border counts as boundary, so the point is well inside the visible object. Ties go to the first
    pixel in row-major order.
    """
    padded = np.pad(np.asarray(mask, np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(col), float(row)


def object_prompts(scene: Scene, kind: PromptKind) -> list[dict[str, Any]]:
    """One prompt per object: its tight box, or one positive click at its interior point."""
    if kind == "box":
        return [{"box": box_prompt(o.mask)} for o in scene.objects]
    return [{"points": [(*interior_point(o.mask), 1)]} for o in scene.objects]


def evaluate(predict: Predictor, scenes: Sequence[Scene], kind: PromptKind) -> list[ObjectScore]:
    """Prompt every object of every scene (one ``predict`` call per scene) and score each mask."""
    scores: list[ObjectScore] = []
    for scene_index, scene in enumerate(scenes):
        masks = predict(scene.image, object_prompts(scene, kind))
        if len(masks) != len(scene.objects):
            raise ValueError(f"predictor returned {len(masks)} masks for {len(scene.objects)} prompts")
        for index, (obj, predicted) in enumerate(zip(scene.objects, masks, strict=True)):
            iou, offset = mask_iou(predicted, obj.mask), centroid_offset(predicted, obj.mask)
            scores.append(ObjectScore(scene_index, index, obj.kind, iou, offset))
    return scores


def mean_iou(scores: Sequence[ObjectScore]) -> float:
    """Mean IoU over scored objects."""
    if not scores:
        raise ValueError("no scores to average")
    return float(np.mean([s.iou for s in scores]))


def segmentor_predictor(segmentor: Segmentor) -> Predictor:
    """A predictor that runs :meth:`Segmentor.segment` (single-mask output, one call per image)."""

    def predict(image: np.ndarray, prompts: list[dict[str, Any]]) -> list[np.ndarray]:
        results = segmentor.segment(image, prompts=prompts, output_formats=["numpy"])
        return [np.asarray(r.mask, bool) for r in results]

    return predict
