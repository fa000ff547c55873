"""supervision (``sv.Detections``) in and out: "detector boxes in, masks out" in two lines.

::

    import supervision as sv
    from perceptra_seg.integrations.supervision import segment_detections

    boxes = sv.Detections.from_ultralytics(detector(image)[0])     # any detector
    masks = segment_detections(segmentor, image, boxes)             # the same detections, with SAM masks

Conventions (they differ, so every conversion is explicit here):

* our ``bbox`` is ``(x1, y1, x2, y2)`` with ``x2`` / ``y2`` exclusive (``x2 - x1`` = width in pixels);
  supervision's mask boxes (``sv.mask_to_xyxy``) are *inclusive*: ``x2`` is the last foreground column. Results →
  detections write ``xyxy = (x1, y1, x2 - 1, y2 - 1)``; an empty mask keeps ``(0, 0, 0, 0)`` as both libraries do.
* a detector's ``xyxy`` are continuous pixel coordinates, which is what SAM's box prompt takes: detections →
  prompts pass them unchanged.

Needs the ``supervision`` extra (``pip install ".[supervision]"`` in a clone); supervision itself needs no torch
and no torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from ..extras import missing_extra
from ..models import Prompt, SegmentationResult
from ..utils.masks import rle_to_mask

__all__ = ["detections_to_prompts", "segment_detections", "to_detections"]


def _sv() -> Any:
    """The supervision module, or :class:`~perceptra_seg.exceptions.ConfigError` with the install line."""
    try:
        import supervision
    except ImportError as exc:
        raise missing_extra("supervision", exc) from None
    return supervision


def _mask_of(result: SegmentationResult) -> np.ndarray:
    if result.mask is not None:
        return np.asarray(result.mask, dtype=bool)
    if result.rle is not None:
        return rle_to_mask(result.rle)
    raise InvalidInputError("a result needs the 'numpy' or 'rle' format to become a supervision mask")


def to_detections(
    results: Sequence[SegmentationResult],
    *,
    class_id: Sequence[int] | np.ndarray | None = None,
    class_name: Sequence[str] | None = None,
) -> Any:
    """``sv.Detections`` of ``results`` (a :class:`~perceptra_seg.results.ResultSet` or any list of results).

    Returns detections with ``mask`` bool ``[N, H, W]`` (from ``mask``, else decoded from ``rle``), ``xyxy``
    float ``[N, 4]`` in supervision's inclusive convention, ``confidence`` = the model's predicted IoU, ``class_id``
    (given, else ``None``), and ``data["prompt_index"]`` (plus ``data["class_name"]`` when given; automatic masks
    also ``data["stability_score"]``).

    Raises:
        InvalidInputError: a result has neither ``numpy`` nor ``rle``; ``class_id`` / ``class_name`` do not have
            one entry per result; the masks differ in size.
    """
    sv = _sv()
    count = len(results)
    for name, values in (("class_id", class_id), ("class_name", class_name)):
        if values is not None and len(values) != count:
            raise InvalidInputError(f"{name} has {len(values)} entries for {count} results")
    if count == 0:
        return sv.Detections.empty()
    masks = [_mask_of(result) for result in results]
    if len({mask.shape for mask in masks}) != 1:
        raise InvalidInputError("the results come from images of different sizes")
    xyxy = np.array(
        [[x1, y1, x2 - 1, y2 - 1] if x2 > x1 else [0, 0, 0, 0] for x1, y1, x2, y2 in (r.bbox for r in results)],
        dtype=np.float32,
    )
    data: dict[str, Any] = {"prompt_index": np.array([r.prompt_index for r in results], dtype=int)}
    if class_name is not None:
        data["class_name"] = np.array(list(class_name))
    if all(r.stability_score is not None for r in results):
        data["stability_score"] = np.array([r.stability_score for r in results], dtype=np.float32)
    return sv.Detections(
        xyxy=xyxy,
        mask=np.stack(masks),
        confidence=np.array([r.score for r in results], dtype=np.float32),
        class_id=None if class_id is None else np.asarray(class_id, dtype=int),
        data=data,
    )


def detections_to_prompts(detections: Any) -> list[Prompt]:
    """One box :class:`~perceptra_seg.models.Prompt` per detection, ``xyxy`` passed unchanged (continuous pixel
    coordinates of the original image, as a detector gives them)."""
    xyxy = np.asarray(detections.xyxy, dtype=float).reshape(-1, 4)
    return [Prompt(box=(float(x1), float(y1), float(x2), float(y2))) for x1, y1, x2, y2 in xyxy]


def segment_detections(segmentor: Any, image: Any, detections: Any, *, multimask: bool = False) -> Any:
    """``detections`` with a SAM mask for each box: a copy whose ``mask`` is bool ``[N, H, W]`` and whose
    ``data["sam_score"]`` holds the masks' predicted IoU; ``xyxy``, ``confidence``, ``class_id`` and the rest of
    ``data`` stay the detector's.

    Args:
        segmentor: a :class:`~perceptra_seg.Segmentor` or a :class:`~perceptra_seg.client.Client` (anything with
            their ``segment(image, prompts, output_formats=..., strategy=..., multimask=...)``).
        image: the image the detections were made on (any image ``segmentor`` accepts, or its embed handle).
        detections: ``sv.Detections``; with none, they are returned unchanged.
        multimask: score 3 candidate masks per box and keep the best.
    """
    if len(detections) == 0:
        return detections
    prompts = detections_to_prompts(detections)
    if multimask:
        results = segmentor.segment(image, prompts, output_formats=["numpy"], multimask=True)
        best: dict[int, SegmentationResult] = {}
        for result in results:
            kept = best.get(result.prompt_index)
            if kept is None or result.score > kept.score:
                best[result.prompt_index] = result
        ordered = [best[index] for index in range(len(prompts))]
    else:
        ordered = list(segmentor.segment(image, prompts, output_formats=["numpy"]))
    out = detections[np.arange(len(detections))]  # a copy: indexing builds new arrays
    out.mask = np.stack([_mask_of(result) for result in ordered])
    out.data["sam_score"] = np.array([result.score for result in ordered], dtype=np.float32)
    return out
