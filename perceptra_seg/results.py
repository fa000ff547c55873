"""What :meth:`Segmentor.run <perceptra_seg.Segmentor.run>` returns, and the one JSON shape of it.

Per-call metadata (request id, wall time, stage timings, model info) is carried once, on :class:`CallInfo`;
every :class:`~perceptra_seg.models.SegmentationResult` of the call also repeats ``request_id``, ``latency_ms`` and
``model_info`` for code that handles results one by one. :func:`mask_document` and :meth:`ResultSet.to_dict` are
the JSON shaping every front end uses (REST bodies, CLI ``--json`` and result files); the COCO exporter
(:mod:`perceptra_seg.utils.coco`) writes COCO's own record shape from the same results.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from .exceptions import NotFoundError
from .models import EmbeddedImage, SegmentationResult
from .timings import StageClock

__all__ = ["CallInfo", "EmbedResult", "ResultSet", "mask_document"]


@dataclass(frozen=True)
class CallInfo:
    """Metadata of one SDK call.

    Attributes:
        request_id: 32 hex digits, new for every call.
        model_info: model name, variant, backend, device, precision, checkpoint fingerprint.
        latency_ms: wall time of the whole call in milliseconds.
        stages_s: seconds per stage (``decode_image``, ``encode``, ``decode_masks``, ``outputs``; see
            :mod:`perceptra_seg.timings`); a stage that did not run is absent.
    """

    request_id: str
    model_info: dict[str, Any]
    latency_ms: float
    stages_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def finish(
        cls, request_id: str, model_info: dict[str, Any], clock: StageClock, *, outputs: bool = True
    ) -> CallInfo:
        """Close ``clock`` and record what it measured (``outputs``: see :meth:`StageClock.finish`)."""
        stages = clock.finish(outputs=outputs)
        return cls(request_id, model_info, clock.elapsed() * 1000.0, stages)

    @property
    def cache_hit(self) -> bool:
        """The image encoder did not run (an embedded handle or an embedding-cache hit)."""
        return "encode" not in self.stages_s


class ResultSet(list[SegmentationResult]):
    """The masks of one segmentation call, in result order, with the call's metadata.

    A plain ``list`` of :class:`~perceptra_seg.models.SegmentationResult` (so code written for
    ``Segmentor.segment``'s list keeps working: indexing, ``+``, ``==``) plus two attributes.

    Attributes:
        info: the call's :class:`CallInfo`.
        image_size: ``(H, W)`` of the image in pixels.
    """

    def __init__(self, results: Iterable[SegmentationResult], info: CallInfo, image_size: tuple[int, int]) -> None:
        super().__init__(results)
        self.info = info
        self.image_size = image_size

    def __repr__(self) -> str:
        height, width = self.image_size
        return (
            f"ResultSet({len(self)} masks, image={width}x{height}, request_id={self.info.request_id!r}, "
            f"latency_ms={self.info.latency_ms:.1f})"
        )

    def to_dict(self, *, encodings: Collection[str] | None = None, single: bool = False) -> dict[str, Any]:
        """JSON-ready ``{"request_id", "latency_ms", "model_info", "results": [mask_document, ...]}``.

        Args:
            encodings: the encodings to include per mask (default: every one the results carry).
            single: put the one mask's fields at the top level instead of ``results`` (one-object calls).

        Raises:
            NotFoundError: ``single`` and no mask (the quality filters dropped it; 404 in the service).
        """
        body: dict[str, Any] = {
            "request_id": self.info.request_id,
            "latency_ms": self.info.latency_ms,
            "model_info": self.info.model_info,
        }
        if single:
            body.update(mask_document(self.only(), encodings=encodings))
        else:
            body["results"] = [mask_document(result, encodings=encodings) for result in self]
        return body

    def only(self) -> SegmentationResult:
        """The one mask of a single-object call (strategy ``best``).

        Raises:
            NotFoundError: the quality filters (``min_score`` / ``min_stability``) dropped every mask (404 in the
                service).
        """
        if not self:
            raise NotFoundError("no mask of this prompt reaches min_score / min_stability")
        return self[0]


@dataclass(frozen=True)
class EmbedResult:
    """An embedded image and the call's metadata.

    Attributes:
        handle: pass it to ``segment*`` / :class:`~perceptra_seg.requests.SegmentRequest` instead of the image.
        info: the call's :class:`CallInfo`.
    """

    handle: EmbeddedImage
    info: CallInfo


#: JSON key of each encoding a mask may carry, and how its value is written.
_ENCODINGS = {
    "rle": ("rle", lambda r: r.rle),
    "png": ("png_base64", lambda r: None if r.png_bytes is None else base64.b64encode(r.png_bytes).decode("ascii")),
    "polygons": ("polygons", lambda r: r.polygons),
}


def mask_document(result: SegmentationResult, *, encodings: Collection[str] | None = None) -> dict[str, Any]:
    """The JSON fields of one mask: ``prompt_index``, ``score``, ``area``, ``bbox`` (``[x1, y1, x2, y2]``, ``x2``
    / ``y2`` exclusive), each encoding the result carries (``rle``, ``png_base64``, ``polygons``), limited to
    ``encodings`` when given, ``stability_score`` when it is defined, and for automatic masks ``point_coords``
    (``[[x, y]]``) and ``crop_box`` (``[x0, y0, x1, y1]``). Numpy masks do not travel as JSON."""
    out: dict[str, Any] = {
        "prompt_index": int(result.prompt_index),
        "score": float(result.score),
        "area": int(result.area),
        "bbox": [int(v) for v in result.bbox],
    }
    for name, (key, value_of) in _ENCODINGS.items():
        value = value_of(result)
        if value is not None and (encodings is None or name in encodings):
            out[key] = value
    if result.stability_score is not None and math.isfinite(result.stability_score):
        out["stability_score"] = float(result.stability_score)
    if result.point_coords is not None:
        out["point_coords"] = [[float(x), float(y)] for x, y in result.point_coords]
    if result.crop_box is not None:
        out["crop_box"] = [int(v) for v in result.crop_box]
    if result.label is not None:
        out["label"] = result.label
    return out
