"""Segment the shipped sample image from a box and from a click (what ``segmentor-cli demo`` runs).

Writes ``mask_box.png`` and ``mask_points.png`` (1-bit masks), ``overlay.png`` (both masks and their prompts drawn on
the image) and ``results.json`` (prompts, scores, areas, boxes, model) into a folder. With the packaged ``demo``
model it needs the torch extra and no network.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..utils.image_io import load_image
from ..utils.overlay import render_overlay

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = ["SAMPLE_BOX", "SAMPLE_POINTS", "SWITCH_HINT", "run_demo", "sample_image_path"]

#: Box prompt ``(x1, y1, x2, y2)`` around the teal rectangle at the bottom right of the sample image (pixels,
#: ``x2``/``y2`` exclusive).
SAMPLE_BOX: tuple[float, float, float, float] = (368.0, 249.0, 447.0, 314.0)
#: Click prompt ``(x, y, label)``: one foreground click in the middle of the blue rectangle at the top right.
SAMPLE_POINTS: tuple[tuple[float, float, int], ...] = ((382.0, 109.0, 1),)

SWITCH_HINT = (
    "This was the offline demo model (a tiny SAM trained on synthetic shapes; it is not meant for real photos).\n"
    "For real images use Meta's weights, e.g.\n"
    "    segmentor-cli demo --model sam_v2 --variant hiera_tiny                      # downloads the file once\n"
    "    segmentor-cli demo --model sam_v1 --checkpoint /models/sam_vit_b_01ec64.pth  # a file you already have\n"
    '    Segmentor(model="sam_v2", variant="hiera_small")                              # in Python\n'
    "or set SEGMENTOR_MODEL_NAME, SEGMENTOR_MODEL_VARIANT and SEGMENTOR_MODEL_CHECKPOINT_PATH."
)


def sample_image_path() -> Path:
    """The sample image shipped with the package (``perceptra_seg/assets/sample.png``, RGB 480×320)."""
    return Path(str(importlib.resources.files("perceptra_seg").joinpath("assets", "sample.png")))


def _entry(result: Any, prompt: dict[str, Any], mask_file: str) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "score": round(float(result.score), 4),
        "area": int(result.area),
        "bbox_xyxy": [int(v) for v in result.bbox],
        "mask_file": mask_file,
    }


def run_demo(out_dir: str | Path, segmentor: Segmentor) -> dict[str, Any]:
    """Segment the sample image from :data:`SAMPLE_BOX` and from :data:`SAMPLE_POINTS` and write the outputs.

    Args:
        out_dir: created if missing; existing files of the same names are replaced.
        segmentor: the segmentor to use (``segmentor-cli demo`` passes the packaged demo model unless told otherwise).

    Returns:
        The content written to ``results.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sample = sample_image_path()
    image = load_image(sample)
    formats = ["numpy", "png"]
    by_box = segmentor.segment_from_box(image, SAMPLE_BOX, output_formats=formats)
    by_points = segmentor.segment_from_points(image, list(SAMPLE_POINTS), output_formats=formats)
    for name, result in (("mask_box.png", by_box), ("mask_points.png", by_points)):
        if result.png_bytes is None:
            raise RuntimeError("the segmentor returned no PNG although PNG output was requested")
        (out / name).write_bytes(result.png_bytes)
    masks = [np.asarray(by_box.mask), np.asarray(by_points.mask)]
    overlay = render_overlay(image, masks, boxes=[SAMPLE_BOX], points=list(SAMPLE_POINTS))
    (out / "overlay.png").write_bytes(overlay)
    summary = {
        "image": {"file": sample.name, "width": int(image.shape[1]), "height": int(image.shape[0])},
        "model": by_box.model_info,
        "box": _entry(by_box, {"box": list(SAMPLE_BOX)}, "mask_box.png"),
        "points": _entry(by_points, {"points": [list(p) for p in SAMPLE_POINTS]}, "mask_points.png"),
        "overlay_file": "overlay.png",
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
