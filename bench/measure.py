"""Timing primitives: repeated measurement with warm-up, summary statistics, the machine's matmul throughput and
model FLOP counts (the compute floor)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Budget", "count_encoder_flops", "matmul_gflops", "summarize", "time_calls", "time_calls_with_part"]


@dataclass(frozen=True)
class Budget:
    """How often to repeat a measurement: ``warmup`` untimed calls, then at least ``min_repeats`` timed calls and
    more while fewer than ``max_repeats`` were made and less than ``seconds`` of timed calls have passed."""

    warmup: int
    min_repeats: int
    max_repeats: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup,
            "min_repeats": self.min_repeats,
            "max_repeats": self.max_repeats,
            "seconds": self.seconds,
        }


def summarize(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """``n``, ``median_ms``, ``p95_ms`` (nearest rank), ``min_ms``, ``mean_ms`` of the samples (milliseconds)."""
    if not samples_ms:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples_ms)
    count = len(ordered)
    middle = count // 2
    median = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    p95 = ordered[max(0, math.ceil(0.95 * count) - 1)]
    return {
        "n": count,
        "median_ms": round(median, 3),
        "p95_ms": round(p95, 3),
        "min_ms": round(ordered[0], 3),
        "mean_ms": round(sum(ordered) / count, 3),
    }


def time_calls(call: Callable[[int], object], budget: Budget, sync: Callable[[], None] | None = None) -> list[float]:
    """Run ``call(i)`` ``budget.warmup`` times untimed, then timed as the budget allows; returns the times in ms.

    ``i`` counts all calls from 0 (warm-up included), so callers can feed a different input to each call.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read.
    """
    for index in range(budget.warmup):
        call(index)
    samples: list[float] = []
    spent = 0.0
    index = budget.warmup
    while len(samples) < budget.min_repeats or (len(samples) < budget.max_repeats and spent < budget.seconds):
        if sync is not None:
            sync()
        start = time.perf_counter()
        call(index)
        if sync is not None:
            sync()
        elapsed = time.perf_counter() - start
        samples.append(elapsed * 1000.0)
        spent += elapsed
        index += 1
    return samples


def time_calls_with_part(
    call: Callable[[int], object],
    part_seconds: Callable[[], float],
    budget: Budget,
    sync: Callable[[], None] | None = None,
) -> tuple[list[float], list[float]]:
    """:func:`time_calls`, plus for every timed call how much the running total ``part_seconds()`` grew during it
    (in ms): the time of one part of the call, such as the decoder inside an SDK call. Warm-up calls are left out
    of both lists."""
    parts: list[float] = []

    def wrapped(index: int) -> None:
        before = part_seconds()
        call(index)
        parts.append((part_seconds() - before) * 1000.0)

    samples = time_calls(wrapped, budget, sync)
    return samples, parts[budget.warmup :]


def matmul_gflops(size: int = 2048, repeats: int = 10, dtype: str = "float32", device: str = "cpu") -> float:
    """Sustained ``torch.matmul`` throughput of square ``size`` matrices in GFLOP/s (2·size³ FLOP per product)."""
    import torch

    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=torch_dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=torch_dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    samples = time_calls(
        lambda _: torch.matmul(a, b), Budget(warmup=2, min_repeats=repeats, max_repeats=repeats, seconds=0.0), sync
    )
    best_s = sorted(samples)[len(samples) // 2] / 1000.0  # the median product
    return 2.0 * size**3 / best_s / 1e9


def _attention_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of ``scaled_dot_product_attention`` (Q·Kᵀ and A·V; shapes ``[..., L, E]``), which torch's counter does
    not count on CPU, where the op is not decomposed into matmuls."""
    *batch, length_q, embed = query
    length_k, embed_v = key[-2], value[-1]
    heads = math.prod(batch)
    return 2 * heads * length_q * length_k * embed + 2 * heads * length_q * length_k * embed_v


def count_encoder_flops(family: str, variant: str, image_size: int = 1024) -> dict[str, Any]:
    """FLOPs of one image-encoder forward (``get_image_embeddings``) of our transformers model for a variant.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on a forward of a ``[1, 3, S, S]`` input with the
    model on the ``meta`` device (shapes only: no weights, no arithmetic, well under a second), attention included.
    Returns ``{"gflop": total, "by_op": {op: gflop}}``; FLOP = 2 × multiply-accumulates.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from perceptra_seg.backends.torch_backend import build_model
    from perceptra_seg.registry import architecture_config

    with torch.device("meta"):
        model: Any = build_model(family, architecture_config(family, variant)).eval()  # type: ignore[arg-type]
        pixels = torch.zeros(1, 3, image_size, image_size)
    mapping = {torch.ops.aten.scaled_dot_product_attention: _attention_flops}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        model.get_image_embeddings(pixels)
    by_op = {str(op): round(count / 1e9, 3) for op, count in counter.get_flop_counts()["Global"].items()}
    return {"gflop": round(counter.get_total_flops() / 1e9, 3), "by_op": by_op}
