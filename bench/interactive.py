"""The interactive path: prompts on an image that is already encoded, with output encoding (RLE + polygons).

* ours: ``Segmentor.segment(handle, boxes=...)`` on an ``EmbeddedImage`` handle, one prompt per call or all prompts
  in one call; the decoder's own compute time is ``backend.decode`` alone on the same embedding.
* Meta's reference: ``predictor.predict(box=...)`` per prompt, and its batched form (SAM 1 ``predict_torch`` with
  transformed boxes, SAM 2 ``predict`` with an ``[N, 4]`` box array), followed by the same RLE + polygon encoding
  our SDK does (``perceptra_seg.utils.masks.encode_mask``), so both sides deliver the same thing.
* the seed-style baseline: a ``Segmentor`` with the embedding cache off re-encodes the image on every call, as the
  original tool did; against ours (cache on) for the same prompts, one call each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from perceptra_seg.backends import ImageEmbedding
from perceptra_seg.models import EmbeddedImage, Prompt
from perceptra_seg.prompts import build_batches
from perceptra_seg.utils.masks import encode_mask

from .measure import Budget, summarize, time_calls, time_calls_with_part
from .models import OUTPUT_FORMATS, RLE_ONLY
from .sdk import LoadedSegmentor

__all__ = ["decoder_only", "meta_interactive", "ours_interactive", "seed_baseline"]

Box = tuple[float, float, float, float]
Sync = Callable[[], None] | None


def _budget(repeats: int, *, first: bool) -> Budget:
    """One warm-up call before the first prompt count only (later counts run on warm caches and pools)."""
    return Budget(warmup=1 if first else 0, min_repeats=repeats, max_repeats=repeats, seconds=0.0)


def _per_prompt(samples_ms: Sequence[float], count: int) -> dict[str, Any]:
    return summarize([s / count for s in samples_ms])


def _time_with_part(
    call: Callable[[int], object], part_seconds: Callable[[], float], budget: Budget, sync: Sync, count: int
) -> tuple[dict[str, Any], float]:
    """ms per prompt of ``call`` over ``count`` prompts, and the median ms per prompt of the part of it that the
    running total ``part_seconds()`` accounts for (e.g. the decoder inside an SDK call)."""
    samples, parts = time_calls_with_part(call, part_seconds, budget, sync)
    return _per_prompt(samples, count), float(summarize([p / count for p in parts])["median_ms"])


def ours_interactive(
    loaded: LoadedSegmentor,
    handle: EmbeddedImage,
    boxes: Sequence[Box],
    counts: Sequence[int],
    repeats: int,
    sync: Sync,
) -> list[dict[str, Any]]:
    """ms per prompt for ``n`` box prompts (each of ``counts``), one call per prompt and all in one call."""
    segmentor, backend = loaded.segmentor, loaded.backend
    formats = list(OUTPUT_FORMATS)
    rows = []
    for position, count in enumerate(counts):
        budget = _budget(repeats, first=position == 0)
        chosen = list(boxes[:count])

        def single(_: int, chosen: list[Box] = chosen) -> None:
            for box in chosen:
                segmentor.segment(handle, boxes=[box], output_formats=formats)

        def batch(_: int, chosen: list[Box] = chosen) -> None:
            results = segmentor.segment(handle, boxes=chosen, output_formats=formats)
            if len(results) != len(chosen):
                raise RuntimeError(f"{len(chosen)} prompts gave {len(results)} results")

        for mode, call in (("single", single), ("batch", batch)):
            stats, decoder_ms = _time_with_part(call, lambda: backend.decode_s, budget, sync, count)
            # decoder_ms: the time inside backend.decode, per prompt; the rest is upsampling and output encoding
            rows.append({"prompts": count, "mode": mode, **stats, "decoder_ms": round(decoder_ms, 3)})
    return rows


def decoder_only(
    loaded: LoadedSegmentor, embedding: ImageEmbedding, handle: EmbeddedImage, box: Box, budget: Budget, sync: Sync
) -> dict[str, Any]:
    """The decoder's own compute for one box (``backend.decode``) against one cached prompt through the SDK
    (decode + upsampling + threshold + output encoding), on the same embedding: with RLE only (the target's
    "decoder + RLE") and with RLE + polygons."""
    inner = loaded.backend.inner
    [(_, batch)] = build_batches([Prompt(box=box)], embedding.original_size, inner.family)
    decoder = summarize(time_calls(lambda _: inner.decode(embedding, batch, multimask=False), budget, sync))
    segmentor = loaded.segmentor
    out: dict[str, Any] = {"decoder": decoder}
    # polygons of random-weight masks are slow to trace (see the README): three calls are enough for that column
    few = Budget(warmup=1, min_repeats=3, max_repeats=3, seconds=0.0)
    for name, formats, calls in (
        ("cached_prompt", list(RLE_ONLY), budget),
        ("cached_prompt_polygons", list(OUTPUT_FORMATS), few),
    ):

        def prompt(_: int, formats: list[str] = formats) -> None:
            segmentor.segment(handle, boxes=[box], output_formats=formats)

        out[name] = summarize(time_calls(prompt, calls, sync))
    ratio = out["cached_prompt"]["median_ms"] / decoder["median_ms"] if decoder["median_ms"] else None
    out["ratio"] = round(ratio, 3) if ratio is not None else None
    return out


class _Clock:
    """Adds up the seconds spent inside ``with clock:`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.seconds += time.perf_counter() - self._start

    def total(self) -> float:
        return self.seconds


def _encode_all(masks: np.ndarray) -> None:
    for mask in masks:
        encode_mask(mask, list(OUTPUT_FORMATS))


def meta_interactive(
    predictor: Any,
    family: str,
    size: tuple[int, int],
    boxes: Sequence[Box],
    counts: Sequence[int],
    repeats: int,
    sync: Sync,
) -> list[dict[str, Any]]:
    """ms per prompt of the reference predictor (image already set), with and without output encoding."""
    import torch

    rows = []
    for position, count in enumerate(counts):
        budget = _budget(repeats, first=position == 0)
        chosen = np.asarray(boxes[:count], dtype=np.float32)
        clock = _Clock()

        def single(_: int, chosen: np.ndarray = chosen, clock: _Clock = clock) -> None:
            for box in chosen:
                with clock:
                    masks, _, _ = predictor.predict(box=box, multimask_output=False)
                _encode_all(masks[:1])

        def batch(_: int, chosen: np.ndarray = chosen, clock: _Clock = clock, count: int = count) -> None:
            with clock:
                if family == "sam1":
                    transformed = predictor.transform.apply_boxes_torch(
                        torch.as_tensor(chosen, device=predictor.device), size
                    )
                    masks = predictor.predict_torch(None, None, boxes=transformed, multimask_output=False)[0]
                    masks = masks.cpu().numpy()
                else:
                    masks = predictor.predict(box=chosen, multimask_output=False)[0]
            _encode_all(np.asarray(masks).reshape(count, -1, *size)[:, 0])

        for mode, call in (("single", single), ("batch", batch)):
            stats, predict_ms = _time_with_part(call, clock.total, budget, sync, count)
            rows.append({"prompts": count, "mode": mode, **stats, "predict_only_ms": round(predict_ms, 3)})
    return rows


def seed_baseline(loaded: LoadedSegmentor, image: np.ndarray, boxes: Sequence[Box]) -> dict[str, Any]:
    """``len(boxes)`` prompts on one image, one ``segment(image, box)`` call each: cache off (re-encode per call,
    the seed's behaviour) vs ours (cache on, fresh), plus ours with all prompts in one call. RLE output on every
    side (the same work after the decoder, so it stays out of the comparison's way)."""
    formats = list(RLE_ONLY)
    backend = loaded.backend
    timings: dict[str, float] = {}
    encodes: dict[str, int] = {}
    runs: dict[str, tuple[Any, bool]] = {
        "baseline": (loaded.sibling(cache={"enabled": False}), False),
        "ours": (loaded.sibling(), False),
        "ours_batched": (loaded.sibling(), True),
    }
    for name, (segmentor, batched) in runs.items():
        backend.reset()
        start = time.perf_counter()
        if batched:
            segmentor.segment(image, boxes=list(boxes), output_formats=formats)
        else:
            for box in boxes:
                segmentor.segment(image, boxes=[box], output_formats=formats)
        timings[name] = (time.perf_counter() - start) * 1000.0
        encodes[name] = backend.encode_calls
    return {
        "prompts": len(boxes),
        **{f"{name}_ms": round(ms, 1) for name, ms in timings.items()},
        "encoder_calls": encodes,
        "speedup": round(timings["baseline"] / timings["ours"], 2),
        "speedup_batched": round(timings["baseline"] / timings["ours_batched"], 2),
    }
