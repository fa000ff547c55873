"""What the GPU benchmark (``bench/gpu.sh``, ``python -m bench.gpu``) measures and how often.

The full plan is sized for one data-centre GPU within about five minutes, model building included (four variants,
each: a checkpoint, one worker for ours, one for Meta's predictor); the quick plan is the CPU smoke test of the
same code (two small variants, one repetition, batch 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .measure import Budget
from .models import VARIANTS

__all__ = ["GPU_FULL", "GPU_QUICK", "PRECISIONS", "GpuPlan", "make_gpu_plan"]

#: encoder/decoder precisions of every row: fp32, and fp16 / bf16 autocast (the same on both sides)
PRECISIONS = ("fp32", "fp16", "bf16")
_BUDGETS = ("embed", "encoder", "encoder_batch", "decoder")


@dataclass(frozen=True)
class GpuPlan:
    """Everything that decides what the GPU benchmark runs and how long.

    Attributes:
        mode: ``full`` or ``quick``.
        variants: benchmarked architectures, in run order (keys of ``models.VARIANTS``).
        precisions: subset of :data:`PRECISIONS`.
        batch: batch size of the batched encoder row (8 on the GPU).
        embed: repetitions of the user-level call on one image (``Segmentor.embed`` / ``predictor.set_image``).
        encoder: repetitions of the encoder module on a ``[1, 3, 1024, 1024]`` tensor.
        encoder_batch: repetitions of the encoder module on a ``[batch, 3, 1024, 1024]`` tensor.
        decoder: repetitions of one box prompt on the embedded image (prompt to full-size mask on the host).
        iou_boxes: box prompts whose masks are compared between precisions and between ours and Meta's.
        worker_timeout_s: wall-clock limit of one worker process.
    """

    mode: str
    variants: tuple[str, ...]
    precisions: tuple[str, ...]
    batch: int
    embed: Budget
    encoder: Budget
    encoder_batch: Budget
    decoder: Budget
    iou_boxes: int
    worker_timeout_s: float

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in _BUDGETS:
            out[name] = getattr(self, name).as_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuPlan:
        values = dict(data)
        for name in _BUDGETS:
            values[name] = Budget(**values[name])
        for name in ("variants", "precisions"):
            values[name] = tuple(values[name])
        return cls(**values)


GPU_FULL = GpuPlan(
    mode="full",
    variants=("vit_b", "hiera_tiny", "hiera_large", "vit_h"),  # smallest first: a cut-short run keeps them
    precisions=PRECISIONS,
    batch=8,
    # about a second of timed calls per row: process starts and model loads dominate the run's time
    embed=Budget(warmup=2, min_repeats=5, max_repeats=20, seconds=1.0),
    encoder=Budget(warmup=2, min_repeats=5, max_repeats=20, seconds=1.0),
    encoder_batch=Budget(warmup=1, min_repeats=3, max_repeats=8, seconds=1.5),
    decoder=Budget(warmup=5, min_repeats=20, max_repeats=60, seconds=0.75),
    iou_boxes=4,
    worker_timeout_s=240.0,
)

GPU_QUICK = GpuPlan(
    mode="quick",
    variants=("vit_b", "hiera_tiny"),
    # fp16 autocast on a CPU without fp16 matrix units takes minutes per vit_b encode: ask for it with --precisions
    precisions=("fp32", "bf16"),
    batch=2,
    embed=Budget(warmup=0, min_repeats=1, max_repeats=1, seconds=0.0),
    encoder=Budget(warmup=0, min_repeats=1, max_repeats=1, seconds=0.0),
    encoder_batch=Budget(warmup=0, min_repeats=1, max_repeats=1, seconds=0.0),
    decoder=Budget(warmup=1, min_repeats=2, max_repeats=2, seconds=0.0),
    iou_boxes=3,
    worker_timeout_s=900.0,
)


def make_gpu_plan(
    *,
    quick: bool,
    variants: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    batch: int | None = None,
) -> GpuPlan:
    """The full or quick plan, optionally narrowed to some variants / precisions or with another batch size.

    Raises:
        ValueError: an unknown variant or precision, or a batch size below 1.
    """
    plan = GPU_QUICK if quick else GPU_FULL
    changes: dict[str, Any] = {}
    if variants is not None:
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
        changes["variants"] = tuple(variants)
    if precisions is not None:
        unknown = [p for p in precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}")
        # fp32 always runs first: it is what the other precisions' masks are compared with
        changes["precisions"] = tuple(p for p in PRECISIONS if p in precisions or p == "fp32")
    if batch is not None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        changes["batch"] = batch
    return dataclasses.replace(plan, **changes)
