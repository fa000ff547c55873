"""What a front end asks the SDK to do: one typed request per kind of call, executed by
:meth:`Segmentor.run <perceptra_seg.Segmentor.run>`.

Every front end (the SDK's convenience methods, the REST routes, the CLI commands) builds one of these and hands
it over; nothing else crosses the seam. A request checks what it can without the image (strategy, output formats,
overlay with a handle) when it is made; prompts are checked against the image size when it runs.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .decoding import STRATEGIES, Strategy
from .exceptions import InvalidInputError
from .models import EmbeddedImage, Prompt
from .utils.masks import OutputFormat, validate_formats

__all__ = ["AutoMaskRequest", "EmbedRequest", "SegmentRequest", "SegmentorRequest"]


class _Identified:
    """What every request shares: the caller's optional id for the call."""

    request_id: str | None

    def call_id(self) -> str:
        """``request_id``, or a new random one (32 hex digits)."""
        return self.request_id or uuid.uuid4().hex


@dataclass(frozen=True)
class SegmentRequest(_Identified):
    """Masks for prompts on one image.

    Attributes:
        image: an image source the Segmentor's :class:`~perceptra_seg.inputs.InputPolicy` accepts (numpy
            ``[H, W]``/``[H, W, 3]``/``[H, W, 4]``, PIL image, path, bytes, base64, URL) or an
            :class:`~perceptra_seg.models.EmbeddedImage` handle.
        prompts: ``Prompt`` objects or ``{"box": (x1, y1, x2, y2), "points": [(x, y, label), ...], "mask_input":
            logits}`` mappings, one object each (pixels of the original image, XYXY boxes).
        boxes: flat form; each ``(x1, y1, x2, y2)`` box is its own prompt.
        points: flat form; all ``(x, y, label)`` points together are one prompt.
        strategy: ``all`` (one result per mask), ``best`` (the highest-scoring mask), ``largest`` (the mask with
            most pixels) or ``merge`` (the union of every mask, ``prompt_index`` -1).
        output_formats: validated, de-duplicated names (``numpy``, ``rle``, ``png``, ``polygons``); ``None`` = the
            configured ``outputs.formats``.
        multimask: 3 masks per prompt instead of 1.
        return_overlay: attach a PNG of the image with the masks drawn (needs the image, not a handle).
        min_score: drop masks whose predicted IoU is below this (before the strategy); ``None`` =
            ``postprocess.min_score``.
        min_stability: drop masks whose stability score is below this; ``None`` = ``postprocess.min_stability``.
        request_id: the caller's id for this call (the REST service passes its ``X-Request-ID``); ``None`` = a new
            random one. It becomes ``CallInfo.request_id`` and every result's ``request_id``.

    Raises:
        InvalidInputError: unknown strategy or output format, or ``return_overlay`` with a handle.
    """

    image: Any
    prompts: tuple[Prompt | Mapping[str, Any], ...] = ()
    boxes: Any = None
    points: Any = None
    strategy: Strategy = "all"
    output_formats: tuple[OutputFormat, ...] | None = None
    multimask: bool = False
    return_overlay: bool = False
    min_score: float | None = None
    min_stability: float | None = None
    request_id: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        for name in ("min_score", "min_stability"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.output_formats is not None:  # the one place per-call formats are checked
            object.__setattr__(self, "output_formats", validate_formats(self.output_formats))
        if self.return_overlay and isinstance(self.image, EmbeddedImage):
            raise InvalidInputError("return_overlay needs the image itself, not an embedded image id")
        object.__setattr__(self, "prompts", tuple(self.prompts))

    @classmethod
    def build(
        cls,
        image: Any,
        prompts: Iterable[Prompt | Mapping[str, Any]] | None = None,
        *,
        output_formats: Sequence[str] | str | None = None,
        **options: Any,
    ) -> SegmentRequest:
        """A request from loosely typed arguments (any iterable of prompts, any sequence of format names)."""
        names = [output_formats] if isinstance(output_formats, str) else output_formats
        formats = None if names is None else cast(tuple[OutputFormat, ...], tuple(names))  # checked in __post_init__
        return cls(image, tuple(prompts or ()), output_formats=formats, **options)


@dataclass(frozen=True)
class EmbedRequest(_Identified):
    """Encode one image now and keep its embedding cached; prompts sent later with the handle cost only the decoder.

    Attributes:
        image: an image source the Segmentor's input policy accepts (see :class:`SegmentRequest`).
        request_id: as for :class:`SegmentRequest`.
    """

    image: Any
    request_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class AutoMaskRequest(_Identified):
    """Segment everything: a grid of point prompts over the image (and its crops), quality filters and NMS, as
    Meta's automatic mask generators do (see :mod:`perceptra_seg.automatic`).

    Attributes:
        image: an image source the input policy accepts, or an ``embed()`` handle (only with ``crop_n_layers`` 0).
        options: generator options named as in Meta's generators (``points_per_side``, ``pred_iou_thresh``,
            ``stability_score_thresh``, ``crop_n_layers``, ``use_m2m``, ...; see
            :class:`~perceptra_seg.automatic.AutoOptions`); unset ones take the model family's defaults.
        output_formats: as for :class:`SegmentRequest`.
        request_id: as for :class:`SegmentRequest`.

    Raises:
        InvalidInputError: an unknown option name or output format (values are checked when the request runs,
            against the model family's defaults).
    """

    image: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    output_formats: tuple[OutputFormat, ...] | None = None
    request_id: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        from .automatic.options import NAMES

        unknown = sorted(set(self.options) - set(NAMES))
        if unknown:
            raise InvalidInputError(f"unknown option(s) {unknown}; valid options: {', '.join(NAMES)}")
        if self.output_formats is not None:
            object.__setattr__(self, "output_formats", validate_formats(self.output_formats))
        object.__setattr__(self, "options", dict(self.options))


#: Every request :meth:`Segmentor.run <perceptra_seg.Segmentor.run>` executes.
SegmentorRequest = SegmentRequest | EmbedRequest | AutoMaskRequest
