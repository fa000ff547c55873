"""How a :class:`~perceptra_seg.requests.SegmentRequest` runs: decode the image once, check the prompts, encode
(whole image, embedded handle or tiling windows), decode masks in batches, apply the strategy, encode the outputs.

Called by :meth:`Segmentor.run <perceptra_seg.Segmentor.run>` while it holds the backend; the steps it uses
(``load``, ``embedding``, ``embedded``, ``digest``) are the Segmentor's.
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from .cancel import CancelToken, check
from .config import PostprocessConfig
from .decoding import MaskCandidate, apply_strategy, decode_prompts
from .models import EmbeddedImage, Prompt, SegmentationResult
from .prompts import normalize_prompts
from .requests import SegmentRequest
from .results import CallInfo, ResultSet
from .timings import StageClock
from .utils.masks import encode_outputs, mask_area, mask_bbox, resolve_formats
from .utils.overlay import render_overlay
from .utils.tiling import plan_windows, shift_prompt

if TYPE_CHECKING:
    from .core import Segmentor

__all__ = ["execute_segment"]


def execute_segment(seg: Segmentor, request: SegmentRequest, cancel: CancelToken | None) -> ResultSet:
    """Run ``request`` on ``seg`` (see :meth:`Segmentor.segment <perceptra_seg.Segmentor.segment>`).

    Raises:
        InvalidInputError, ImageTooLargeError: a bad image or prompt.
        NotFoundError: an embedded handle that is no longer cached.
        OperationCancelledError: ``cancel`` was set.
    """
    clock = StageClock()
    formats = resolve_formats(request.output_formats, seg.config.outputs)
    pixels: np.ndarray | None = None
    if isinstance(request.image, EmbeddedImage):
        size = (request.image.height, request.image.width)
    else:
        pixels = seg.load(request.image, clock)
        size = (int(pixels.shape[0]), int(pixels.shape[1]))
    limits = seg.config.input
    prompts = normalize_prompts(
        size,
        prompts=request.prompts,
        boxes=request.boxes,
        points=request.points,
        max_prompts=limits.max_prompts,
        max_points=limits.max_points_per_prompt,
        mask_size=seg.backend.mask_size,
    )
    check(cancel)
    found = _candidates(seg, request, pixels, prompts, clock, cancel)
    candidates = apply_strategy(request.strategy, _quality_filter(found, request, seg.config.postprocess))
    overlay = None
    if pixels is not None and request.return_overlay:
        overlay = render_overlay(
            pixels,
            [c.mask for c in candidates],
            boxes=[p.box for p in prompts if p.box is not None],
            points=[pt for p in prompts for pt in p.points],
        )
    request_id = request.call_id()
    model_info = seg.backend.info()
    outputs = seg.config.outputs
    results = []
    for candidate in candidates:
        check(cancel)
        encoded = encode_outputs(candidate.mask, formats, outputs)
        results.append(
            SegmentationResult(
                score=candidate.score,
                area=mask_area(candidate.mask),
                bbox=mask_bbox(candidate.mask),
                model_info=model_info,
                request_id=request_id,
                prompt_index=candidate.prompt_index,
                low_res_logits=candidate.low_res_logits,
                overlay_png=overlay,
                stability_score=None if math.isnan(candidate.stability) else candidate.stability,
                **encoded,
            )
        )
    info = CallInfo.finish(request_id, model_info, clock)
    for result in results:
        result.latency_ms = info.latency_ms
    return ResultSet(results, info, size)


def _quality_filter(
    candidates: list[MaskCandidate], request: SegmentRequest, postprocess: PostprocessConfig
) -> list[MaskCandidate]:
    """The candidates whose predicted IoU and stability score reach the request's (else the config's) minimums; a
    minimum of 0 keeps everything (an undefined stability, NaN, passes only a minimum of 0)."""
    min_score = postprocess.min_score if request.min_score is None else request.min_score
    min_stability = postprocess.min_stability if request.min_stability is None else request.min_stability
    if min_score <= 0 and min_stability <= 0:
        return candidates
    return [
        c
        for c in candidates
        if (min_score <= 0 or c.score >= min_score) and (min_stability <= 0 or c.stability >= min_stability)
    ]


def _candidates(
    seg: Segmentor,
    request: SegmentRequest,
    pixels: np.ndarray | None,
    prompts: list[Prompt],
    clock: StageClock,
    cancel: CancelToken | None,
) -> list[MaskCandidate]:
    """Masks for every prompt, from an embedded handle, the whole image, or tiling windows."""
    refuse = getattr(seg.backend, "check_prompts", None)
    if refuse is not None:  # a model that cannot answer box / point prompts says so before any encoder runs
        refuse()
    decode = partial(
        decode_prompts,
        seg.backend,
        multimask=request.multimask,
        postprocess=seg.config.postprocess,
        batch_size=seg.config.runtime.batch_size,
        cancel=cancel,
        clock=clock,
    )
    everything = list(range(len(prompts)))
    if pixels is None:
        assert isinstance(request.image, EmbeddedImage)
        embedding = seg.embedded(request.image)
        return decode(embedding, prompts, everything, canvas_size=embedding.original_size)
    size = (int(pixels.shape[0]), int(pixels.shape[1]))
    tiling = seg.config.tiling
    if not (tiling.enabled and max(size) > tiling.min_image_side):
        embedding = seg.embedding(pixels, seg.digest(pixels), clock, cancel=cancel)
        return decode(embedding, prompts, everything, canvas_size=size)
    windows = plan_windows(
        prompts, size, window_size=tiling.window_size, margin=tiling.margin, max_windows=tiling.max_windows
    )
    digest = seg.digest(pixels)
    by_index: dict[int, list[MaskCandidate]] = {}
    # every prompt is moved into its window before any encoder runs: one that cannot be (mask_input) fails first
    shifted = {window: [shift_prompt(prompts[i], window) for i in window.prompt_indices] for window in windows}
    for window in windows:
        crop = np.ascontiguousarray(pixels[window.y0 : window.y1, window.x0 : window.x1])
        check(cancel)
        embedding = seg.embedding(crop, digest, clock, window)
        for candidate in decode(
            embedding, shifted[window], window.prompt_indices, canvas_size=size, offset=(window.x0, window.y0)
        ):
            by_index.setdefault(candidate.prompt_index, []).append(candidate)
    return [candidate for index in everything for candidate in by_index[index]]
