"""``runtime.precision``: what ``auto`` resolves to, and a warning for precisions this CPU only emulates.

The torch backend resolves ``auto`` per device and CPU (no torch import here, so ``segmentor-cli info`` can show the
choice without loading a model):

* CUDA: SAM 2 / 2.1 (Hiera) in fp16 autocast on GPUs with tensor cores (compute capability 7.0 and later); SAM 1 and
  older GPUs in fp32. Measured on an H200 with random weights (:data:`CUDA_FP16_MEASURED`): fp16 kept Hiera masks at
  IoU ≥ 0.998 against fp32 (bf16: 0.369 worst for hiera_small), but not vit_b's (fp16 0.723, bf16 0.600 worst).
* CPU with native bf16 (AVX512-BF16 or AMX-BF16): bf16 autocast for the Meta architectures whose masks were measured
  to stay at IoU ≥ 0.97 against fp32 (:data:`BF16_CPU_MEASURED`), fp32 for the others (hiera_small missed the floor
  with 0.968; vit_l, vit_h, hiera_base_plus and hiera_large were not measured; neither were custom architectures
  from ``model.architecture``).
* CPU without native bf16: fp32 (bf16 is emulated there and several times slower; fp16 is never a fast CPU path).

The ONNX backend's ``auto`` is the precision of the export it finds (:func:`resolve_onnx_auto`, also what
``segmentor-cli info`` shows).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import hardware
from .base import Family
from .onnx_manifest import MANIFEST_NAME, Precision, default_onnx_dir, read_manifest

if TYPE_CHECKING:
    from ..config import SegmentorConfig
    from ..registry import ModelSpec

__all__ = [
    "AUTO_IOU_FLOOR",
    "BF16_CPU_MEASURED",
    "CUDA_AUTO_NOTE",
    "CUDA_FP16_MEASURED",
    "EMULATED_BF16_SLOWDOWN",
    "EMULATED_FP16_SLOWDOWN",
    "MEASURED_AGREEMENT",
    "Agreement",
    "auto_reason",
    "decide_auto",
    "decide_openvino_auto",
    "local_fingerprint",
    "path_measured_safe",
    "resolve_onnx_auto",
    "resolve_torch_precision",
    "warn_if_emulated",
]

logger = logging.getLogger(__name__)

#: the mask IoU against fp32 a reduced-precision path must keep, on every measurement, for ``auto`` to pick it
AUTO_IOU_FLOOR = 0.97


@dataclass(frozen=True)
class Agreement:
    """One measurement of a reduced-precision path's masks against fp32 masks of the same model and prompts.

    Attributes:
        where: ``cpu`` (torch autocast on a CPU with native bf16: AVX512-BF16), ``cpu-openvino`` (the openvino
            backend's inference precision hint on such a CPU) or ``cuda``.
        precision: the reduced precision (``bf16``, ``fp16``).
        family, variant: the model (``variant`` as :attr:`~perceptra_seg.registry.ModelSpec.precision_key`).
        weights: ``random`` (Meta's architecture with random weights, on the bench photographs) or ``demo`` (the
            packaged demo model's learned weights on its held-out scenes: the real-weights check of a path).
        mean_iou: mean over prompts (``None`` where only the worst prompt was recorded).
        min_iou: the worst prompt's IoU.
        source: where the measurement is written down.
    """

    where: str
    precision: str
    family: Family
    variant: str
    weights: str
    mean_iou: float | None
    min_iou: float
    source: str


_FULL_RUN = "BENCHMARKS.md, full run 2026-11-25"
_H200 = "docs/config.md, precision auto (H200)"
_GPU_RUN = "BENCHMARKS.md, GPU section (H200, 2026-12-04)"
_GUARD = "BENCHMARKS.md, accuracy guard (2026-12-05)"
#: every measured agreement ``auto`` decides from (see :func:`path_measured_safe`)
MEASURED_AGREEMENT: tuple[Agreement, ...] = (
    Agreement("cpu", "bf16", "sam1", "vit_b", "random", 0.9885, 0.981, _FULL_RUN),
    Agreement("cpu", "bf16", "sam2", "hiera_tiny", "random", 0.9866, 0.980, _FULL_RUN),
    Agreement("cpu", "bf16", "sam2", "hiera_small", "random", 0.9856, 0.968, _FULL_RUN),
    Agreement("cpu", "bf16", "sam1", "tiny", "demo", 0.9949, 0.9371, _GUARD),
    # the openvino backend's bf16 inference hint (every layer in bf16, not autocast)
    Agreement("cpu-openvino", "bf16", "sam2", "hiera_tiny", "random", 0.9871, 0.9798, _GUARD),
    Agreement("cpu-openvino", "bf16", "sam1", "vit_b", "random", 0.9922, 0.9895, _GUARD),
    Agreement("cpu-openvino", "bf16", "sam2", "hiera_small", "random", 0.9858, 0.9755, _GUARD),
    Agreement("cpu-openvino", "bf16", "sam1", "tiny", "demo", 0.998, 0.9771, _GUARD),
    Agreement("cuda", "fp16", "sam2", "hiera_tiny", "random", None, 0.998, _H200),
    Agreement("cuda", "fp16", "sam2", "hiera_small", "random", None, 0.999, _H200),
    Agreement("cuda", "fp16", "sam2", "hiera_large", "random", 0.995, 0.993, _GPU_RUN),
    Agreement("cuda", "fp16", "sam1", "vit_b", "random", None, 0.723, _H200),
    Agreement("cuda", "fp16", "sam1", "vit_b", "random", 0.998, 0.998, _GPU_RUN),
    Agreement("cuda", "fp16", "sam1", "vit_h", "random", 0.999, 0.999, _GPU_RUN),
)


def path_measured_safe(where: str, precision: str, family: Family, variant: str) -> bool:
    """Whether ``precision`` on ``where`` is measured to keep masks of ``(family, variant)`` at IoU ≥
    :data:`AUTO_IOU_FLOOR` against fp32: at least one random-weight measurement of that model, every one with its
    worst prompt at the floor or above, and the path's real-weights check (the demo model on its held-out scenes,
    where measured for ``where``) at a mean IoU at the floor or above."""
    rows = [
        a
        for a in MEASURED_AGREEMENT
        if (a.where, a.precision, a.family, a.variant, a.weights) == (where, precision, family, variant, "random")
    ]
    real = [a for a in MEASURED_AGREEMENT if (a.where, a.precision, a.weights) == (where, precision, "demo")]
    return (
        bool(rows)
        and all(a.min_iou >= AUTO_IOU_FLOOR for a in rows)
        and all(a.mean_iou is not None and a.mean_iou >= AUTO_IOU_FLOOR for a in real)
    )


#: (family, variant) whose bf16 masks are measured safe on a CPU with AVX512-BF16 (:func:`path_measured_safe`;
#: random weights: vit_b 0.981, hiera_tiny 0.980 worst prompt; hiera_small 0.968 is not).
BF16_CPU_MEASURED: frozenset[tuple[Family, str]] = frozenset(
    (a.family, a.variant)
    for a in MEASURED_AGREEMENT
    if a.where == "cpu" and a.precision == "bf16" and path_measured_safe("cpu", "bf16", a.family, a.variant)
)
#: families whose fp16-autocast masks may run on CUDA (SAM 2: hiera_tiny 0.998, hiera_small 0.999, hiera_large 0.993
#: worst prompt on an H200, random weights; SAM 1 stays fp32: vit_b measured 0.723 once); within them, only the
#: variants :func:`path_measured_safe` accepts.
CUDA_FP16_MEASURED: frozenset[Family] = frozenset({"sam2"})
#: what CUDA's auto does (see docs/config.md for the measurement)
CUDA_AUTO_NOTE = (
    "CUDA: SAM 2 fp16 on compute capability >= 7.0 for hiera_tiny/small/large (masks measured at IoU >= 0.993 vs"
    " fp32; other variants fp32, not measured); SAM 1 fp32 (fp16 and bf16 measured below 0.97)"
)
#: how much slower emulated bf16 autocast ran than fp32 on a CPU without native bf16 (see docs/config.md)
EMULATED_BF16_SLOWDOWN = "5.6× slower than fp32 measured (hiera_tiny encoder, torch and oneDNN on AVX2 kernels)"

#: how much slower fp16 autocast ran than fp32 on CPU (see docs/config.md)
EMULATED_FP16_SLOWDOWN = "3.2× slower measured (hiera_tiny encoder, torch and oneDNN on AVX2 kernels)"

_warned: set[str] = set()
_warned_lock = threading.Lock()


def resolve_torch_precision(
    requested: str,
    *,
    device_type: str,
    family: Family,
    variant: str,
    custom_architecture: bool = False,
    cuda_capability: tuple[int, int] | None = None,
) -> str:
    """The precision the torch backend runs: ``requested`` itself unless it is ``auto``.

    Args:
        requested: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (``runtime.precision``).
        device_type: ``cpu`` or ``cuda``.
        family, variant: the model (``variant`` as in the registry, e.g. ``vit_b``, ``hiera_tiny``).
        custom_architecture: ``model.architecture`` overrides the variant's shape (measurements do not apply).
        cuda_capability: ``(major, minor)`` compute capability of the CUDA device (``device_type == "cuda"``).
    """
    if requested != "auto":
        return requested
    return decide_auto(device_type, family, variant, custom_architecture, cuda_capability)[0]


def auto_reason(device_type: str, family: Family, variant: str, custom_architecture: bool = False) -> str:
    """One sentence saying why ``auto`` resolves as it does on this machine (for ``segmentor-cli info``)."""
    return decide_auto(device_type, family, variant, custom_architecture)[1]


def decide_auto(
    device_type: str,
    family: Family,
    variant: str,
    custom_architecture: bool = False,
    cuda_capability: tuple[int, int] | None = None,
) -> tuple[str, str]:
    """What ``auto`` resolves to for the torch backend and why: ``(precision, reason)`` (the one decision table)."""
    if device_type == "cuda":
        tensor_cores = cuda_capability is not None and cuda_capability >= (7, 0)
        measured = family in CUDA_FP16_MEASURED and path_measured_safe("cuda", "fp16", family, variant)
        fp16 = tensor_cores and measured and not custom_architecture
        return ("fp16" if fp16 else "fp32"), CUDA_AUTO_NOTE
    if not hardware.cpu_features().native_bf16:
        return "fp32", "CPU without native bf16 (no AVX512_BF16/AMX_BF16): fp32"
    if custom_architecture:
        return "fp32", "CPU with native bf16, but model.architecture is custom (bf16 accuracy not measured): fp32"
    if (family, variant) in BF16_CPU_MEASURED:
        return (
            "bf16",
            f"CPU with native bf16; {variant} bf16 masks measured at IoU >= 0.97 vs fp32 ({_evidence(variant)}): bf16",
        )
    return "fp32", f"CPU with native bf16, but {variant} in bf16 is not measured to keep IoU >= 0.97 vs fp32: fp32"


def _evidence(variant: str) -> str:
    """The bf16-on-CPU measurements behind a choice, in a few words (for the reason ``segmentor-cli info`` shows)."""
    rows = [a for a in MEASURED_AGREEMENT if (a.where, a.precision) == ("cpu", "bf16")]
    worst = min((a.min_iou for a in rows if a.variant == variant and a.weights == "random"), default=None)
    demo = [a.mean_iou for a in rows if a.weights == "demo" and a.mean_iou is not None]
    parts = [] if worst is None else [f"worst prompt {worst:.3f} on random weights"]
    parts += [f"mean {mean:.3f} on the demo model's held-out scenes" for mean in demo]
    return "; ".join(parts) or "measured"


def decide_openvino_auto(family: Family, variant: str, custom_architecture: bool = False) -> tuple[str, str]:
    """What ``auto`` resolves to for the openvino backend and why: ``(precision, reason)``; bf16 (OpenVINO's bf16
    hint) only on a CPU with native bf16 and where :data:`MEASURED_AGREEMENT` backs it, else fp32 (its f32 hint)."""
    if not hardware.cpu_features().native_bf16:
        return "fp32", "CPU without native bf16 (no AVX512_BF16/AMX_BF16): OpenVINO's f32 hint"
    if custom_architecture:
        return "fp32", "CPU with native bf16, but model.architecture is custom (bf16 accuracy not measured): f32 hint"
    if path_measured_safe("cpu-openvino", "bf16", family, variant):
        worst = min(a.min_iou for a in MEASURED_AGREEMENT if (a.where, a.variant) == ("cpu-openvino", variant))
        reason = f"CPU with native bf16; {variant} masks under OpenVINO's bf16 hint measured at IoU >= 0.97 vs fp32"
        return "bf16", f"{reason} (worst prompt {worst:.3f} on random weights): bf16 hint"
    return "fp32", f"CPU with native bf16, but {variant} under OpenVINO's bf16 hint is not measured: f32 hint"


def warn_if_emulated(precision: str, device_type: str) -> str | None:
    """Log a warning, once per process and precision, when ``precision`` is slow on this CPU; returns its text.

    bf16 on a CPU without AVX512-BF16/AMX-BF16 is emulated; fp16 on any CPU is not a fast path.
    """
    if device_type != "cpu" or precision not in ("bf16", "fp16"):
        return None
    if precision == "bf16":
        if hardware.cpu_features().native_bf16:
            return None
        message = (
            "runtime.precision bf16 on a CPU without AVX512_BF16 or AMX_BF16: bf16 is emulated there, "
            f"{EMULATED_BF16_SLOWDOWN}; use precision auto or fp32"
        )
    else:
        message = (
            "runtime.precision fp16 on CPU: CPUs have no fast fp16 path for these models, it runs slower than fp32"
            f" ({EMULATED_FP16_SLOWDOWN}); use precision auto or fp32 (fp16 is for CUDA)"
        )
    with _warned_lock:
        first = precision not in _warned
        _warned.add(precision)
    if first:
        logger.warning(message)
    return message


def local_fingerprint(config: SegmentorConfig, spec: ModelSpec) -> str | None:
    """Fingerprint of the configured checkpoint when it is available without downloading, else ``None``."""
    from ..weights import default_cache_dir, file_fingerprint, resolve_checkpoint

    model = config.model
    if model.checkpoint_path is not None:
        return resolve_checkpoint(spec, model.checkpoint_path, cache_dir=model.cache_dir, offline=True).fingerprint
    cached = (Path(model.cache_dir).expanduser() if model.cache_dir else default_cache_dir()) / spec.filename
    return file_fingerprint(cached) if cached.is_file() else None


def resolve_onnx_auto(config: SegmentorConfig, spec: ModelSpec, checkpoint: str | None) -> Precision:
    """``runtime.precision: auto`` of the onnx backend: the precision of the export in ``onnx.model_dir``, else of
    the first export of ``checkpoint`` (a :func:`local_fingerprint`) in the cache (fp32, fp16, then INT8), else fp32
    (exported on first use)."""
    if config.onnx.model_dir is not None:
        directory = Path(config.onnx.model_dir).expanduser()
        found: Precision = read_manifest(directory).precision if (directory / MANIFEST_NAME).is_file() else "fp32"
    else:
        candidates: tuple[Precision, ...] = ("fp32", "fp16", "int8")
        found = next(
            (
                precision
                for precision in candidates
                if checkpoint is not None
                and (
                    default_onnx_dir(config.model.cache_dir, spec.name, spec.variant, precision, checkpoint)
                    / MANIFEST_NAME
                ).is_file()
            ),
            "fp32",
        )
    logger.info("precision auto-selected for ONNX Runtime: %s (the export's)", found)
    return found
