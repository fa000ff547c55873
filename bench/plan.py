"""What a benchmark run measures and how often: the full plan (~25 minutes on 2 cores) and the quick smoke plan."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .measure import Budget
from .models import RUNTIMES, VARIANTS, Runtime

__all__ = ["SECTIONS", "Plan", "make_plan"]

#: the parts of a run; ``--sections`` picks a subset (memory is reported for whatever ran)
SECTIONS = ("encoder", "interactive", "seed", "rest")


@dataclass(frozen=True)
class Plan:
    """Everything that decides what runs and how long.

    Attributes:
        mode: ``full`` or ``quick``.
        sections: the parts to run (see :data:`SECTIONS`).
        variants: benchmarked architectures (keys of ``models.VARIANTS``).
        runtimes: our runtimes per variant (``torch-fp32``, ``torch-bf16``, ``onnx-fp32``, ``onnx-int8``).
        encoder: repetitions of every encoder row.
        prompt_counts: prompts per image in the interactive rows.
        interactive_repeats: timed repetitions of each interactive measurement (after one warm-up).
        interactive_runtimes: our runtimes that get interactive rows (Meta's reference always does).
        decoder: repetitions of the decoder-only and one-cached-prompt measurements (every runtime of ours).
        seed_prompts: prompts in the seed-style baseline comparison.
        seed_variants: variants that get the baseline (10 encoder passes each).
        rest_variants: variants served in the REST rows.
        rest_concurrency: client threads per REST run.
        rest_requests: requests per REST run (at most).
        rest_seconds: duration of a REST run (at most).
        rest_sdk: repetitions of the in-process SDK call the HTTP overhead is measured against.
        matmul_size: side of the square matrices of the GFLOP/s calibration.
        matmul_repeats: timed products of the calibration.
        worker_timeout_s: wall-clock limit of one worker process.
    """

    mode: str
    sections: tuple[str, ...]
    variants: tuple[str, ...]
    runtimes: tuple[Runtime, ...]
    encoder: Budget
    prompt_counts: tuple[int, ...]
    interactive_repeats: int
    interactive_runtimes: tuple[Runtime, ...]
    decoder: Budget
    seed_prompts: int
    seed_variants: tuple[str, ...]
    rest_variants: tuple[str, ...]
    rest_concurrency: tuple[int, ...]
    rest_requests: int
    rest_seconds: float
    rest_sdk: Budget
    matmul_size: int
    matmul_repeats: int
    worker_timeout_s: float

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("encoder", "decoder", "rest_sdk"):
            out[name] = getattr(self, name).as_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        values = dict(data)
        for name in ("encoder", "decoder", "rest_sdk"):
            values[name] = Budget(**values[name])
        for field in dataclasses.fields(cls):
            if isinstance(values.get(field.name), list):
                values[field.name] = tuple(values[field.name])
        return cls(**values)


FULL = Plan(
    mode="full",
    sections=SECTIONS,
    variants=("vit_b", "hiera_tiny", "hiera_small"),
    runtimes=RUNTIMES,
    encoder=Budget(warmup=1, min_repeats=3, max_repeats=10, seconds=20.0),
    prompt_counts=(2, 5, 10, 20),
    interactive_repeats=2,
    interactive_runtimes=("torch-fp32",),
    decoder=Budget(warmup=2, min_repeats=10, max_repeats=30, seconds=5.0),
    seed_prompts=10,
    seed_variants=("vit_b", "hiera_tiny"),
    rest_variants=("hiera_tiny",),
    rest_concurrency=(1, 4),
    rest_requests=150,
    rest_seconds=45.0,
    rest_sdk=Budget(warmup=3, min_repeats=20, max_repeats=60, seconds=10.0),
    matmul_size=2048,
    matmul_repeats=10,
    worker_timeout_s=1200.0,
)

QUICK = Plan(
    mode="quick",
    sections=SECTIONS,
    variants=("vit_b", "hiera_tiny"),
    runtimes=RUNTIMES,
    encoder=Budget(warmup=1, min_repeats=1, max_repeats=1, seconds=0.0),
    prompt_counts=(2, 10),
    interactive_repeats=1,
    interactive_runtimes=("torch-fp32",),
    decoder=Budget(warmup=1, min_repeats=3, max_repeats=3, seconds=0.0),
    seed_prompts=10,
    seed_variants=("hiera_tiny",),
    rest_variants=("hiera_tiny",),
    rest_concurrency=(1, 2),
    rest_requests=16,
    rest_seconds=20.0,
    rest_sdk=Budget(warmup=1, min_repeats=5, max_repeats=5, seconds=0.0),
    matmul_size=1024,
    matmul_repeats=5,
    worker_timeout_s=900.0,
)


def make_plan(
    *,
    quick: bool,
    variants: Sequence[str] | None = None,
    sections: Sequence[str] | None = None,
    runtimes: Sequence[str] | None = None,
) -> Plan:
    """The full or quick plan, optionally narrowed to some variants, sections and runtimes.

    Raises:
        ValueError: an unknown variant, section or runtime.
    """
    plan = QUICK if quick else FULL
    changes: dict[str, Any] = {}
    if variants is not None:
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
        chosen = tuple(variants)
        changes["variants"] = chosen
        # a narrowed run keeps the seed / REST rows on the chosen variants only (the first one when none overlap)
        for name in ("seed_variants", "rest_variants"):
            kept = tuple(v for v in getattr(plan, name) if v in chosen)
            changes[name] = kept or chosen[:1]
    if sections is not None:
        unknown = [s for s in sections if s not in SECTIONS]
        if unknown:
            raise ValueError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
        changes["sections"] = tuple(s for s in SECTIONS if s in sections)
    if runtimes is not None:
        unknown = [r for r in runtimes if r not in RUNTIMES]
        if unknown:
            raise ValueError(f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")
        changes["runtimes"] = tuple(r for r in RUNTIMES if r in runtimes)
    return dataclasses.replace(plan, **changes)
