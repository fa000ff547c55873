"""Mask agreement between our runtimes: the masks of the same prompts under bf16 / ONNX / INT8 against torch fp32.

Each ``ours`` worker saves the masks of ``models.agreement_prompts`` (bit-packed ``[P, H, W]``); this module reads
them back and computes the IoU of every prompt's mask with the torch fp32 mask of the same variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_masks", "mask_agreement", "mask_iou", "save_masks"]

REFERENCE_RUNTIME = "torch-fp32"


def save_masks(path: Path, masks: np.ndarray) -> None:
    """Save bool masks ``[P, H, W]`` bit-packed along W (a 1024×683 mask takes ~87 kB before compression)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [P, H, W], got shape {masks.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, bits=np.packbits(masks, axis=-1), shape=np.array(masks.shape))


def load_masks(path: Path) -> np.ndarray:
    """The bool ``[P, H, W]`` masks written by :func:`save_masks`."""
    with np.load(path) as data:
        count, height, width = (int(v) for v in data["shape"])
        return np.unpackbits(data["bits"], axis=-1, count=width).astype(bool).reshape(count, height, width)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; two empty masks agree fully (1.0)."""
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum()) / union


def mask_agreement(workers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{variant, runtime, prompts, mean_iou, min_iou, empty_masks}]`` for every non-reference runtime whose
    masks and whose variant's torch fp32 masks were saved."""
    saved = {
        (w["variant"], w["runtime"]): Path(w["masks"]["path"])
        for w in workers
        if w.get("kind") == "ours" and w.get("status") == "ok" and "masks" in w
    }
    rows = []
    for (variant, runtime), path in sorted(saved.items()):
        reference_path = saved.get((variant, REFERENCE_RUNTIME))
        if runtime == REFERENCE_RUNTIME or reference_path is None:
            continue
        masks, reference = load_masks(path), load_masks(reference_path)
        if masks.shape != reference.shape:
            raise ValueError(f"{variant} {runtime}: masks {masks.shape} vs {REFERENCE_RUNTIME} {reference.shape}")
        ious = [mask_iou(m, r) for m, r in zip(masks, reference, strict=True)]
        rows.append(
            {
                "variant": variant,
                "runtime": runtime,
                "prompts": len(ious),
                "mean_iou": round(float(np.mean(ious)), 4),
                "min_iou": round(float(np.min(ious)), 4),
                # how many reference masks were empty: agreement on empty masks says little
                "empty_reference_masks": int(sum(not r.any() for r in reference)),
            }
        )
    return rows
