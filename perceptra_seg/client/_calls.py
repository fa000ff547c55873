"""The client's public methods, described once: each builds a :class:`~._wire.Call`; the sync and async clients
only differ in how they send it (:mod:`._sync`, :mod:`._async`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..models import Prompt
from ..utils.logits import encode_logits
from ._wire import Call, box_field, embed_call, formats_field, points_field, prompt_field, segment_call

__all__ = ["auto", "box", "embed", "many", "points"]


def embed(image: Any) -> Call:
    """``POST /v1/embed``: the answer is an :class:`~perceptra_seg.models.EmbeddedImage` (``image_id``, size)."""
    return embed_call(image)


def _refinable(
    output_formats: Sequence[str] | str | None, multimask: bool, mask_input: np.ndarray | None, return_logits: bool
) -> dict[str, Any]:
    return {
        "output_formats": formats_field(output_formats),
        "multimask": multimask or None,
        "mask_input": encode_logits(mask_input) if mask_input is not None else None,
        "return_logits": return_logits or None,
    }


def box(
    image: Any,
    xyxy: Sequence[float],
    output_formats: Sequence[str] | str | None,
    multimask: bool,
    mask_input: np.ndarray | None,
    return_logits: bool,
) -> Call:
    """``POST /v1/segment/box``: one :class:`~perceptra_seg.models.SegmentationResult`."""
    options = {"box": box_field(xyxy), **_refinable(output_formats, multimask, mask_input, return_logits)}
    return segment_call("/v1/segment/box", image, options, single=True)


def points(
    image: Any,
    clicks: Iterable[Any],
    output_formats: Sequence[str] | str | None,
    multimask: bool,
    mask_input: np.ndarray | None,
    return_logits: bool,
) -> Call:
    """``POST /v1/segment/points``: one :class:`~perceptra_seg.models.SegmentationResult`."""
    options = {"points": points_field(clicks), **_refinable(output_formats, multimask, mask_input, return_logits)}
    return segment_call("/v1/segment/points", image, options, single=True)


def many(
    image: Any,
    prompts: Iterable[Prompt | Mapping[str, Any]] | None,
    boxes: Iterable[Sequence[float]] | None,
    flat_points: Iterable[Any] | None,
    strategy: str,
    output_formats: Sequence[str] | str | None,
    multimask: bool,
) -> Call:
    """``POST /v1/segment``: a :class:`~perceptra_seg.results.ResultSet`."""
    options = {
        "prompts": [prompt_field(p) for p in prompts] if prompts is not None else None,
        "boxes": [box_field(b) for b in boxes] if boxes is not None else None,
        "points": points_field(flat_points) if flat_points is not None else None,
        "strategy": strategy,
        "output_formats": formats_field(output_formats),
        "multimask": multimask or None,
    }
    return segment_call("/v1/segment", image, options, single=False)


def auto(image: Any, output_formats: Sequence[str] | str | None, options: Mapping[str, Any]) -> Call:
    """``POST /v1/segment/auto`` with Meta's generator options: a :class:`~perceptra_seg.results.ResultSet`."""
    body = {**options, "output_formats": formats_field(output_formats)}
    return segment_call("/v1/segment/auto", image, body, single=False)
