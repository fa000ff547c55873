"""From a parsed REST body to the SDK request the inference runner executes, and what it will cost.

A route builds one :class:`ServiceCall`: the SDK request (:mod:`perceptra_seg.requests`), the shape of the answer
and the number of objects it asks for. Nothing here decodes images or runs a model.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from ..automatic.options import auto_options
from ..concepts.request import ConceptRequest
from ..decoding import Strategy
from ..models import EmbeddedImage, Point, Prompt
from ..registry import Family
from ..requests import AutoMaskRequest, EmbedRequest, SegmentorRequest, SegmentRequest
from ..utils.logits import decode_logits
from ..utils.masks import OutputFormat
from .schemas import AutoRequest, BoxRequest, PointIn, PointsRequest, SegmentOptions

if TYPE_CHECKING:
    from ..cancel import CancelToken
    from ..core import Segmentor

__all__ = [
    "Answer",
    "ServiceCall",
    "ServiceWork",
    "Source",
    "auto_call",
    "auto_points",
    "embed_call",
    "prompt_count",
    "segment_call",
    "session_call",
    "single_call",
]

#: ``mask``: one mask's fields at the top level; ``results``: a list; ``embed``: ``{image_id, width, height}``;
#: ``session``: ``{"results": ResultSet}`` unshaped, for in-process front ends that keep ``low_res_logits`` (/v1/ws);
#: ``video``: the body a :class:`ServiceWork` returns (/v1/videos).
Answer = Literal["mask", "results", "embed", "session", "video"]
#: A request's image: base64/data-URI text, uploaded or downloaded bytes, or an embedded image handle.
Source = str | bytes | EmbeddedImage


class ServiceWork(abc.ABC):
    """A call that is not one SDK request (the video routes' session operations, :mod:`.video_calls`), run by the
    inference runner exactly like one: same slots, deadline, cancel token, metrics and error mapping."""

    @abc.abstractmethod
    def execute(self, segmentor: Segmentor, cancel: CancelToken) -> tuple[dict[str, Any], dict[str, float]]:
        """Do the work on a runner thread; returns the response body and its stage timings (seconds)."""


@dataclass(frozen=True)
class ServiceCall:
    """One inference request as the service runs it.

    Attributes:
        request: what the SDK executes (its ``request_id`` is the HTTP request's ``X-Request-ID``), or a
            :class:`ServiceWork` (its body is the answer as it is).
        answer: how the response body is shaped (see :data:`Answer`).
        prompts: objects the request asks for (for the work bound, logs and metrics).
        scope: the caller's image-id scope (``embed`` answers with an id valid in it only).
        logits: add the (one) mask's ``low_res_logits`` to a ``mask`` answer (``return_logits``).
    """

    request: SegmentorRequest | ConceptRequest | ServiceWork
    answer: Answer
    prompts: int
    scope: str = ""
    logits: bool = False


def _points(points: list[PointIn]) -> tuple[Point, ...]:
    return tuple((p.x, p.y, p.label) for p in points)


def single_call(
    body: BoxRequest | PointsRequest, image: Source, formats: tuple[OutputFormat, ...], request_id: str | None
) -> ServiceCall:
    """``/v1/segment/box`` and ``/v1/segment/points``: one object, the best mask at the top level (refined from
    ``mask_input`` when given; its logits added with ``return_logits``).

    Raises:
        InvalidInputError: ``mask_input`` is not base64 of ``size`` x ``size`` float32 values.
    """
    mask_input = None if body.mask_input is None else decode_logits(body.mask_input.size, body.mask_input.data)
    if isinstance(body, BoxRequest):
        x1, y1, x2, y2 = body.box
        prompt = Prompt(box=(x1, y1, x2, y2), mask_input=mask_input)
    else:
        prompt = Prompt(points=_points(body.points), mask_input=mask_input)
    request = SegmentRequest(
        image,
        (prompt,),
        strategy="best",
        output_formats=formats,
        multimask=body.multimask,
        min_score=body.min_score,
        min_stability=body.min_stability,
        request_id=request_id,
    )
    return ServiceCall(request, "mask", prompts=1, logits=body.return_logits)


def segment_call(
    options: SegmentOptions, image: Source, formats: tuple[OutputFormat, ...], request_id: str | None
) -> ServiceCall:
    """``/v1/segment`` (and its upload form): any number of objects, one result per mask unless the strategy
    keeps one."""
    prompts = [
        {
            **({"box": p.box} if p.box is not None else {}),
            **({"points": _points(p.points)} if p.points is not None else {}),
        }
        for p in options.prompts or []
    ]
    points = _points(options.points) if options.points else None
    request = SegmentRequest(
        image,
        tuple(prompts),
        boxes=options.boxes,
        points=points,
        strategy=cast(Strategy, options.strategy.value),
        output_formats=formats,
        multimask=options.multimask,
        min_score=options.min_score,
        min_stability=options.min_stability,
        request_id=request_id,
    )
    return ServiceCall(request, "results", prompts=prompt_count(options))


def prompt_count(options: SegmentOptions) -> int:
    """Objects a ``/v1/segment`` body asks for: its prompts, each flat box, and the flat points as one."""
    return len(options.prompts or []) + len(options.boxes or []) + (1 if options.points else 0)


def auto_call(
    body: AutoRequest, image: Source, formats: tuple[OutputFormat, ...], request_id: str | None
) -> ServiceCall:
    """``/v1/segment/auto``: every mask the generator keeps, as ``results``."""
    request = AutoMaskRequest(image, body.generator_options(), formats, request_id=request_id)
    return ServiceCall(request, "results", prompts=0)


def auto_points(family: Family, body: AutoRequest) -> int:
    """Grid points a ``/v1/segment/auto`` body asks the decoder about, summed over every crop of every layer
    (layer ``i`` has ``(2**i)²`` crops).

    Raises:
        InvalidInputError: an option value out of range (checked now, before the image is fetched).
    """
    settings = auto_options(family, **body.generator_options())
    return sum((2**layer) ** 2 * len(grid) for layer, grid in enumerate(settings.grids()))


def embed_call(image: str | bytes, scope: str, request_id: str | None) -> ServiceCall:
    """``/v1/embed`` (and its upload form)."""
    return ServiceCall(EmbedRequest(image, request_id=request_id), "embed", prompts=0, scope=scope)


def session_call(handle: EmbeddedImage, prompt: Prompt, formats: tuple[OutputFormat, ...]) -> ServiceCall:
    """One object of a ``/v1/ws`` session: its accumulated clicks and box plus the previous ``low_res_logits`` as
    ``mask_input`` (the SDK's refinement), best mask only, answered unshaped (see :data:`Answer`)."""
    request = SegmentRequest(handle, (prompt,), strategy="best", output_formats=formats)
    return ServiceCall(request, "session", prompts=1)
