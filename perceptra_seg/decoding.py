"""From an embedding and prompts to full-resolution masks: decoder batches, upsampling, clean-up, strategies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from .backends.base import Backend, ImageEmbedding, PromptBatch
from .cancel import CancelToken, check
from .config import PostprocessConfig
from .models import Prompt
from .preprocessing import mask_and_stability
from .prompts import build_batches
from .timings import StageClock
from .utils.masks import remove_small_regions

__all__ = ["STRATEGIES", "MaskCandidate", "Strategy", "apply_strategy", "decode_prompts"]

#: How the masks of several prompts are returned (see :func:`apply_strategy`); defined here only.
Strategy = Literal["all", "best", "largest", "merge"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)


@dataclass
class MaskCandidate:
    """One predicted mask before output encoding.

    Attributes:
        mask: bool ``[H, W]`` in original-image pixels.
        score: predicted IoU.
        low_res_logits: float32 ``[L, L]`` (``L`` = the backend's ``mask_size``, 256 for Meta's models) in the
            frame of the embedding that produced it.
        prompt_index: index of the prompt in the request (``-1`` for a merged mask).
        stability: stability score of the mask (see :func:`~perceptra_seg.preprocessing.mask_and_stability`); NaN
            when undefined (nothing above ``mask_threshold - stability_offset``, or a merged mask).
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    prompt_index: int
    stability: float = float("nan")


def decode_prompts(
    backend: Backend,
    embedding: ImageEmbedding,
    prompts: Sequence[Prompt],
    prompt_indices: Sequence[int],
    *,
    multimask: bool,
    postprocess: PostprocessConfig,
    canvas_size: tuple[int, int],
    offset: tuple[int, int] = (0, 0),
    batch_size: int | None = None,
    cancel: CancelToken | None = None,
    clock: StageClock | None = None,
) -> list[MaskCandidate]:
    """Answer ``prompts`` (in the embedding's pixel frame) with decoder calls of at most ``batch_size`` prompts of
    one structure each.

    Args:
        prompts: prompts in the coordinates of the image (or window) that was encoded.
        prompt_indices: the request-level index of each prompt, carried into the candidates.
        canvas_size: ``(H, W)`` of the full image; masks of a window are pasted into it at ``offset``.
        offset: ``(x0, y0)`` of the encoded window in the full image (``(0, 0)`` for the whole image).
        batch_size: most prompts per decoder call (``runtime.batch_size``); ``None`` = one call per structure.
            Results do not depend on it; peak memory of the decoder grows with it.
        cancel: checked before every decoder call and every mask (see :mod:`perceptra_seg.cancel`).
        clock: the call's :class:`~perceptra_seg.timings.StageClock`; decoder calls count as ``decode_masks``.

    Returns:
        Candidates in prompt order, K per prompt (3 with ``multimask``, else 1).

    Raises:
        OperationCancelledError: ``cancel`` was set.
    """
    family = backend.family
    clock = clock or StageClock()
    answers: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for rows, batch in build_batches(prompts, embedding.original_size, family):
        step = batch_size or max(1, len(rows))
        for start in range(0, len(rows), step):
            check(cancel)
            with clock.stage("decode_masks"):
                output = backend.decode(embedding, _rows(batch, start, start + step), multimask=multimask)
            upsampled = output.low_res_logits if output.mask_logits is None else output.mask_logits
            for row, position in enumerate(rows[start : start + step]):
                answers[position] = (output.low_res_logits[row], output.iou_scores[row], upsampled[row])
    window_h, window_w = embedding.original_size
    x0, y0 = offset
    candidates = []
    for position, request_index in enumerate(prompt_indices):
        logits_k, scores_k, upsampled_k = answers[position]
        for low_res, score, upsampled in zip(logits_k, scores_k, upsampled_k, strict=True):
            check(cancel)
            mask, stability = mask_and_stability(
                upsampled,
                embedding.original_size,
                embedding.input_size,
                family,
                postprocess.mask_threshold,
                postprocess.stability_offset,
            )
            mask = remove_small_regions(mask, min_area=postprocess.min_hole_area, mode="holes")
            mask = remove_small_regions(mask, min_area=postprocess.min_island_area, mode="islands")
            if (window_h, window_w) != canvas_size:
                canvas = np.zeros(canvas_size, dtype=bool)
                canvas[y0 : y0 + window_h, x0 : x0 + window_w] = mask
                mask = canvas
            low = np.ascontiguousarray(low_res, dtype=np.float32)
            candidates.append(MaskCandidate(mask, float(score), low, request_index, stability))
    return candidates


def _rows(batch: PromptBatch, start: int, stop: int) -> PromptBatch:
    """Prompts ``start:stop`` of ``batch`` (the whole batch when it fits)."""
    if start == 0 and stop >= len(batch):
        return batch

    def part(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[start:stop]

    return PromptBatch(
        points=part(batch.points),
        labels=part(batch.labels),
        boxes=part(batch.boxes),
        mask_inputs=part(batch.mask_inputs),
    )


def apply_strategy(strategy: Strategy, candidates: list[MaskCandidate]) -> list[MaskCandidate]:
    """``all``: every candidate; ``best``: the one with the highest score (ties: the first); ``largest``: the one
    with most pixels (ties: higher score); ``merge``: the union of all masks, scored with the best score and carrying
    the best candidate's logits, ``prompt_index`` -1."""
    if strategy == "all" or not candidates:
        return candidates
    if strategy == "best":
        return [max(candidates, key=lambda c: c.score)]
    if strategy == "largest":
        return [max(candidates, key=lambda c: (int(c.mask.sum()), c.score))]
    best = max(candidates, key=lambda c: c.score)
    merged = np.logical_or.reduce([c.mask for c in candidates])
    return [MaskCandidate(merged, best.score, best.low_res_logits, -1)]
