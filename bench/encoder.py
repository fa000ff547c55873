"""Encoder latency: one image in, one embedding out, as each implementation's user would call it.

* ours: ``Segmentor.embed(image)`` (validation, pixel digest, preprocessing, encoder; every call gets a copy of the
  image differing in one pixel so that it misses the embedding cache);
* Meta's reference: ``SamPredictor.set_image`` / ``SAM2ImagePredictor.set_image`` (preprocessing + encoder);
* transformers: its processor (``SamProcessor`` over the PIL image processor) + ``model.get_image_embeddings``.
  SAM 2's image processor exists only as a torchvision-backed class, so that row reports why it cannot run here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from perceptra_seg.utils.masks import encode_mask

from .agreement import save_masks
from .measure import Budget, summarize, time_calls
from .models import Variant, agreement_prompts, variants_of
from .sdk import LoadedSegmentor

__all__ = ["meta_encoder", "ours_encoder", "ours_masks", "transformers_encoder"]

Sync = Callable[[], None] | None


def ours_encoder(loaded: LoadedSegmentor, image: np.ndarray, budget: Budget, sync: Sync) -> dict[str, Any]:
    """Time ``Segmentor.embed`` on cache-missing copies of ``image``; also the time spent inside the backend."""
    copies = variants_of(image, budget.warmup + budget.max_repeats)
    segmentor, backend = loaded.segmentor, loaded.backend
    backend.reset()
    samples = time_calls(lambda i: segmentor.embed(copies[i]), budget, sync)
    if backend.encode_calls != budget.warmup + len(samples):
        raise RuntimeError(f"expected one encoder call per embed, got {backend.encode_calls} for {len(samples)} calls")
    inside = backend.encode_times_ms[budget.warmup :]  # the timed calls' time inside backend.encode
    return {
        **summarize(samples),
        "backend_encode_median_ms": summarize(inside)["median_ms"],
        "samples_ms": [round(s, 3) for s in samples],
    }


def ours_masks(loaded: LoadedSegmentor, image: np.ndarray, path: Path) -> dict[str, Any]:
    """Masks of the agreement prompts (``models.agreement_prompts``) saved bit-packed to ``path``, and how complex
    they are (output-encoding cost grows with the number of polygons and vertices)."""
    segmentor = loaded.segmentor
    handle = segmentor.embed(image)
    results = segmentor.segment(handle, prompts=agreement_prompts(image.shape[:2]), output_formats=["numpy"])
    masks = np.stack([np.asarray(r.mask, dtype=bool) for r in results])
    save_masks(path, masks)
    return {"path": str(path), "prompts": int(masks.shape[0]), **mask_complexity(masks)}


def mask_complexity(masks: np.ndarray) -> dict[str, float]:
    """Mean foreground fraction, polygons (outer rings) and ring vertices per mask of bool ``[P, H, W]`` masks."""
    polygons, vertices = [], []
    for mask in masks:
        shapes = encode_mask(mask, ["polygons"])["polygons"]
        polygons.append(len(shapes))
        vertices.append(sum(len(ring) for shape in shapes for ring in shape))
    return {
        "mean_area_fraction": round(float(masks.mean()), 3),
        "mean_polygons": round(float(np.mean(polygons)), 1),
        "mean_vertices": round(float(np.mean(vertices)), 1),
    }


def meta_encoder(predictor: Any, image: np.ndarray, budget: Budget, sync: Sync) -> dict[str, Any]:
    """Time the reference predictor's ``set_image`` (the predictor keeps the last image set)."""
    samples = time_calls(lambda _: predictor.set_image(image), budget, sync)
    return {**summarize(samples), "samples_ms": [round(s, 3) for s in samples]}


def transformers_processor(variant: Variant) -> Any:
    """transformers' own processor for the family.

    Raises:
        ImportError: the processor cannot run in this environment (SAM 2's needs torchvision).
    """
    import transformers

    if variant.family == "sam1":
        # the default SamImageProcessor is torchvision-backed; the PIL one is transformers' own alternative
        return transformers.SamProcessor(image_processor=transformers.SamImageProcessorPil())
    return transformers.Sam2Processor(image_processor=transformers.Sam2ImageProcessor())


def transformers_encoder(
    model: Any, processor: Any, image: np.ndarray, budget: Budget, sync: Sync, device: str
) -> dict[str, Any]:
    """Time ``processor(images=image)`` + ``model.get_image_embeddings(pixel_values)`` (inference mode)."""
    import torch

    def call(_: int) -> None:
        inputs = processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            model.get_image_embeddings(inputs["pixel_values"].to(device))

    samples = time_calls(call, budget, sync)
    return {**summarize(samples), "samples_ms": [round(s, 3) for s in samples]}
