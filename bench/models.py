"""What every benchmark row runs on: random-weight reference models saved as Meta checkpoints, the image, the prompts.

Real weights cannot be downloaded here, so each variant is Meta's own reference model (``segment-anything`` /
``sam2``) built with random weights from a fixed seed and saved in Meta's file format; our ``Segmentor`` loads that
file through its normal checkpoint path, the reference predictors use the very same module. Latency does not depend
on the weights' values; mask agreement between precisions does a little (see ``bench/README.md``).

The reference packages import torchvision at import time; where torchvision is not installed (our CPU machines),
:func:`reference_packages` imports them through the stand-in in ``tests/reference_support.py``, which must happen
before anything imports transformers. Where it is installed (a CUDA machine), they import the real one.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

Family = Literal["sam1", "sam2"]
Runtime = Literal["torch-fp32", "torch-fp16", "torch-bf16", "onnx-fp32", "onnx-int8"]

RUNTIMES: tuple[Runtime, ...] = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")
#: the output encodings of every interactive measurement
OUTPUT_FORMATS = ("rle", "polygons")
#: the output encodings of the REST requests and of the cached-prompt target ("decoder + RLE")
RLE_ONLY = ("rle",)


@dataclass(frozen=True)
class Variant:
    """One benchmarked architecture.

    Attributes:
        key: our variant name (``vit_b``, ``hiera_tiny``, ...).
        model: our model name (``sam_v1``, ``sam_v2``).
        family: ``sam1`` or ``sam2``.
        meta_name: ``segment_anything.sam_model_registry`` key (SAM 1) or ``sam2`` config path (SAM 2.1).
        filename: checkpoint file name in the work directory.
        seed: seed of the random weights.
    """

    key: str
    model: str
    family: Family
    meta_name: str
    filename: str
    seed: int


VARIANTS: dict[str, Variant] = {
    "vit_b": Variant("vit_b", "sam_v1", "sam1", "vit_b", "bench_sam_vit_b.pth", 11),
    "vit_l": Variant("vit_l", "sam_v1", "sam1", "vit_l", "bench_sam_vit_l.pth", 12),
    "vit_h": Variant("vit_h", "sam_v1", "sam1", "vit_h", "bench_sam_vit_h.pth", 13),
    "hiera_tiny": Variant(
        "hiera_tiny", "sam_v2", "sam2", "configs/sam2.1/sam2.1_hiera_t.yaml", "bench_sam2.1_hiera_tiny.pt", 21
    ),
    "hiera_small": Variant(
        "hiera_small", "sam_v2", "sam2", "configs/sam2.1/sam2.1_hiera_s.yaml", "bench_sam2.1_hiera_small.pt", 22
    ),
    "hiera_base_plus": Variant(
        "hiera_base_plus", "sam_v2", "sam2", "configs/sam2.1/sam2.1_hiera_b+.yaml", "bench_sam2.1_hiera_b+.pt", 23
    ),
    "hiera_large": Variant(
        "hiera_large", "sam_v2", "sam2", "configs/sam2.1/sam2.1_hiera_l.yaml", "bench_sam2.1_hiera_large.pt", 24
    ),
}


def get_variant(key: str) -> Variant:
    try:
        return VARIANTS[key]
    except KeyError:
        raise ValueError(f"unknown variant {key!r}; choose from {', '.join(VARIANTS)}") from None


def cpu_threads() -> int:
    """The thread count every row uses (all cores this process may run on)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def clean_environment() -> dict[str, str]:
    """This process's environment without ``SEGMENTOR_*`` variables, which would override the benchmark's config."""
    return {name: value for name, value in os.environ.items() if not name.startswith("SEGMENTOR_")}


@functools.cache
def reference_packages() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``segment_anything``, ``sam2.build_sam`` and ``sam2.sam2_image_predictor``: with the real torchvision where
    it is installed, else through the stand-in.

    Call this before anything imports transformers in the process.
    """
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        import sam2.build_sam as build_sam
        import sam2.sam2_image_predictor as sam2_predictor
        import segment_anything

        return segment_anything, build_sam, sam2_predictor
    from tests.reference_support import import_reference_packages

    return import_reference_packages()


def build_reference_model(variant: Variant) -> Any:
    """Meta's model for ``variant`` with random weights (every parameter perturbed, so none stays zero)."""
    import torch

    segment_anything, sam2_build, _ = reference_packages()
    torch.manual_seed(variant.seed)
    if variant.family == "sam1":
        model = segment_anything.sam_model_registry[variant.meta_name]()
    else:
        model = sam2_build.build_sam2(variant.meta_name, None, device="cpu")
    generator = torch.Generator().manual_seed(variant.seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model.eval()


def ensure_checkpoint(variant: Variant, work_dir: Path) -> Path:
    """The Meta-format checkpoint of ``variant`` in ``work_dir``, built (once) from the seeded reference model."""
    import torch

    path = work_dir / "checkpoints" / variant.filename
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    state = build_reference_model(variant).state_dict()
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save({"model": state} if variant.family == "sam2" else state, partial)
    partial.replace(path)
    return path


def load_reference_model(variant: Variant, checkpoint: Path, device: str) -> Any:
    """Meta's model for ``variant`` with the weights of ``checkpoint`` (the file our loader reads too)."""
    import torch

    segment_anything, sam2_build, _ = reference_packages()
    if variant.family == "sam1":
        model = segment_anything.sam_model_registry[variant.meta_name](checkpoint=str(checkpoint))
    else:
        model = sam2_build.build_sam2(variant.meta_name, str(checkpoint), device="cpu")
    return model.to(torch.device(device)).eval()


def onnx_dir(work_dir: Path, variant: Variant, precision: Literal["fp32", "int8"]) -> Path:
    return work_dir / "onnx" / variant.key / precision


def segmentor_config(
    variant: Variant,
    checkpoint: Path,
    runtime: Runtime,
    *,
    work_dir: Path,
    device: str = "cpu",
    cache_max_bytes: int = 64 * 1024 * 1024,
) -> dict[str, Any]:
    """Config sections of our ``Segmentor`` for one runtime row (threads = :func:`cpu_threads`)."""
    backend, precision = runtime.split("-")
    config: dict[str, Any] = {
        "model": {"name": variant.model, "variant": variant.key, "checkpoint_path": str(checkpoint)},
        "runtime": {
            "backend": backend,
            "device": device,
            "precision": "fp32" if precision == "int8" else precision,
            "num_threads": cpu_threads(),
        },
        "cache": {"enabled": True, "max_bytes": cache_max_bytes},
    }
    if backend == "onnx":
        quantized = precision == "int8"
        config["onnx"] = {
            "model_dir": str(onnx_dir(work_dir, variant, "int8" if quantized else "fp32")),
            "quantize": "int8" if quantized else None,
            "auto_export": False,
        }
    return config


@functools.cache
def bench_image() -> np.ndarray:
    """A real photograph (scikit-image's ``coffee``) resized to 1024 on its long side: RGB uint8 ``[683, 1024, 3]``."""
    import cv2
    from skimage import data

    photo = data.coffee()
    height, width = photo.shape[:2]
    scale = 1024 / max(height, width)
    size = (round(width * scale), round(height * scale))
    return np.ascontiguousarray(cv2.resize(photo, size, interpolation=cv2.INTER_AREA))


def variants_of(image: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` copies of ``image`` that differ in one pixel each, so every copy misses the embedding cache."""
    copies = []
    for index in range(count):
        copy = image.copy()
        copy[0, 0, 0] = (int(image[0, 0, 0]) + 1 + index) % 256
        copies.append(copy)
    return copies


def bench_boxes(size: tuple[int, int], count: int, seed: int = 5) -> list[tuple[float, float, float, float]]:
    """``count`` reproducible boxes ``(x1, y1, x2, y2)`` inside an ``(H, W)`` image, 10–60 % of each side."""
    height, width = size
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        box_w, box_h = rng.uniform(0.1, 0.6) * width, rng.uniform(0.1, 0.6) * height
        x1, y1 = rng.uniform(0, width - box_w), rng.uniform(0, height - box_h)
        boxes.append((round(x1, 1), round(y1, 1), round(x1 + box_w, 1), round(y1 + box_h, 1)))
    return boxes


def agreement_prompts(size: tuple[int, int]) -> list[dict[str, Any]]:
    """Prompts whose masks are compared between runtimes: 8 boxes, 4 single clicks, 2 box + click pairs."""
    height, width = size
    boxes = bench_boxes(size, 8, seed=9)
    rng = np.random.default_rng(13)
    clicks = [(float(rng.uniform(0.1, 0.9) * width), float(rng.uniform(0.1, 0.9) * height), 1) for _ in range(4)]
    prompts: list[dict[str, Any]] = [{"box": box} for box in boxes]
    prompts += [{"points": [click]} for click in clicks]
    for box in boxes[:2]:
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 1)
        prompts.append({"box": box, "points": [centre]})
    return prompts
