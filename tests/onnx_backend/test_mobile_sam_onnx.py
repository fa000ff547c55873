"""MobileSAM (the model people run on small devices) exports to ONNX and the ONNX backend answers like torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perceptra_seg import Segmentor

from .conftest import CASES, iou, onnx_config, scaled

pytest.importorskip("onnx")


def test_mobile_sam_onnx_masks_match_torch(
    small_mobile_sam: tuple[Any, Path, dict[str, Any]], photos: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from perceptra_seg.backends.export import export_onnx
    from perceptra_seg.backends.onnx_manifest import read_manifest

    config = small_mobile_sam[2]
    directory = tmp_path / "mobile_sam_onnx"
    export_onnx(config, directory)
    manifest = read_manifest(directory)
    assert (manifest.model, manifest.variant, manifest.family) == ("mobile_sam", "vit_t", "sam1")
    torch_seg, onnx_seg = Segmentor(config), Segmentor(onnx_config(config, directory))
    image = photos["chelsea"]
    prompts = [scaled(p, image.shape[:2]) for p in CASES.values()]
    for multimask in (False, True):
        expected = torch_seg.segment(image, prompts=prompts, multimask=multimask, output_formats=["numpy"])
        actual = onnx_seg.segment(image, prompts=prompts, multimask=multimask, output_formats=["numpy"])
        assert len(actual) == len(expected) == len(prompts) * (3 if multimask else 1)
        for want, got in zip(expected, actual, strict=True):
            assert got.model_info["backend"] == "onnx" and got.model_info["model"] == "mobile_sam"
            assert iou(got.mask, want.mask) >= 0.98, (got.prompt_index, multimask)
            assert abs(got.score - want.score) <= 1e-2
