"""Public data types: prompts in, results out.

Coordinates are always in pixels of the *original* image:

* a box is ``(x1, y1, x2, y2)`` (XYXY), ``x`` along the width, ``y`` along the height, ``x1 < x2`` and ``y1 < y2``;
* a point is ``(x, y, label)`` with ``label`` 1 for foreground and 0 for background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BBox", "EmbeddedImage", "Point", "Prompt", "SegmentationResult"]

#: ``(x1, y1, x2, y2)`` in pixels of the original image.
BBox = tuple[float, float, float, float]
#: ``(x, y, label)``; label 1 = foreground, 0 = background.
Point = tuple[float, float, int]


@dataclass(frozen=True)
class Prompt:
    """One object to segment: at most one box plus any number of points (the SAM contract).

    Attributes:
        box: ``(x1, y1, x2, y2)`` in original-image pixels, or ``None``.
        points: ``((x, y, label), ...)``; label 1 = foreground, 0 = background.
        mask_input: optional low-resolution logits of a previous prediction for this object, float32 ``[L, L]``
            (``SegmentationResult.low_res_logits``; ``L`` is 256 for Meta's models, 128 for ``demo``), used to
            refine a mask with further clicks.
    """

    box: BBox | None = None
    points: tuple[Point, ...] = ()
    mask_input: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EmbeddedImage:
    """Handle to an image whose embedding is cached (from :meth:`Segmentor.embed`).

    Pass it to ``segment*`` in place of the image to skip decoding and encoding. The embedding lives in the
    byte-bounded cache; once evicted, using the handle raises :class:`~perceptra_seg.exceptions.NotFoundError`.

    Attributes:
        image_id: cache key (model fingerprint + pixel digest), stable for the same pixels and model.
        width: image width in pixels.
        height: image height in pixels.
    """

    image_id: str
    width: int
    height: int


@dataclass(repr=False)
class SegmentationResult:
    """One mask and everything derived from it.

    Only the formats asked for are filled in; the others stay ``None``. ``repr()`` is a one-line summary (shape,
    score, area, bbox, formats present), never the arrays or bytes themselves.

    Attributes:
        mask: bool ``[H, W]`` (format ``numpy``).
        rle: COCO RLE ``{"size": [H, W], "counts": str | list[int]}`` (format ``rle``).
        polygons: list of polygons, each a list of rings (exterior first, then holes), each ring ``[[x, y], ...]``
            in pixel coordinates (format ``polygons``).
        png_bytes: single-channel PNG of the mask (format ``png``).
        score: the model's predicted IoU for this mask.
        area: number of foreground pixels.
        bbox: ``(x1, y1, x2, y2)`` of the foreground, ``x2``/``y2`` exclusive (so ``x2 - x1`` is the width in
            pixels); ``(0, 0, 0, 0)`` for an empty mask.
        latency_ms: wall time of the whole call that produced this result.
        model_info: model name, variant, backend, device, precision, checkpoint fingerprint.
        request_id: identifier shared by every result of one call.
        prompt_index: index of the prompt this mask answers (``-1`` for a merged mask).
        low_res_logits: float32 ``[L, L]`` logits (256 for Meta's models, 128 for ``demo``), to pass back as
            ``mask_input`` for refinement.
        overlay_png: PNG of the image with the mask drawn on it, when ``return_overlay=True``.
        stability_score: IoU of the mask thresholded at ``mask_threshold ± stability_score_offset``
            (:meth:`Segmentor.generate`).
        point_coords: ``[[x, y]]``, the grid point that produced the mask (:meth:`Segmentor.generate`).
        crop_box: ``(x0, y0, x1, y1)`` of the crop the mask was predicted on, ``x1``/``y1`` exclusive
            (:meth:`Segmentor.generate`).
    """

    score: float
    area: int
    bbox: tuple[int, int, int, int]
    latency_ms: float = 0.0
    model_info: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    prompt_index: int = 0
    mask: np.ndarray | None = None
    rle: dict[str, Any] | None = None
    polygons: list[list[list[list[float]]]] | None = None
    png_bytes: bytes | None = None
    low_res_logits: np.ndarray | None = field(default=None, repr=False)
    overlay_png: bytes | None = field(default=None, repr=False)
    stability_score: float | None = None
    point_coords: list[list[float]] | None = None
    crop_box: tuple[int, int, int, int] | None = None
    label: str | None = None

    @property
    def formats(self) -> list[str]:
        """The output formats this result carries (``numpy``, ``rle``, ``png``, ``polygons``), in that order."""
        present = {"numpy": self.mask, "rle": self.rle, "png": self.png_bytes, "polygons": self.polygons}
        return [name for name, value in present.items() if value is not None]

    def __repr__(self) -> str:
        if self.mask is not None:
            shape: tuple[int, ...] | None = tuple(int(v) for v in self.mask.shape)
        elif self.rle is not None and "size" in self.rle:
            shape = tuple(int(v) for v in self.rle["size"])
        else:
            shape = None
        extras = [
            name
            for name, value in (("overlay", self.overlay_png), ("low_res_logits", self.low_res_logits))
            if value is not None
        ]
        return (
            f"SegmentationResult(prompt_index={self.prompt_index}, shape={shape}, score={self.score:.4f}, "
            f"area={self.area}, bbox={tuple(int(v) for v in self.bbox)}, formats={self.formats}"
            + (f", with={extras}" if extras else "")
            + f", latency_ms={self.latency_ms:.1f})"
        )
