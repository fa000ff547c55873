"""``runtime.backend: openvino``: the fp32 ONNX export's image encoder on OpenVINO, decoders on ONNX Runtime; masks
as the onnx backend's, settings it cannot run refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino")

from perceptra_seg import Segmentor
from perceptra_seg.exceptions import ConfigError

from ..cpus import AVX2_ONLY, pretend_cpu
from .conftest import Exported, iou, onnx_config


def _openvino(exported: Exported, **runtime: Any) -> Segmentor:
    config = onnx_config(exported.config, exported.fp32_dir, **runtime)
    config["runtime"]["backend"] = "openvino"
    return Segmentor(config)


def test_masks_match_the_onnx_backend(sam1_export: Exported, photos: dict[str, np.ndarray]) -> None:
    image = np.ascontiguousarray(photos["coffee"][::2, ::2])
    boxes = [(20, 30, 200, 180), (100, 40, 290, 190)]
    with _openvino(sam1_export, precision="fp32") as segmentor:
        info = segmentor.backend.info()
        assert (info["backend"], info["precision"]) == ("openvino", "fp32")
        got = segmentor.segment(image, boxes=boxes, output_formats=["numpy"])
        embedding = segmentor.backend.encode(image)
    want = sam1_export.onnx.segment(image, boxes=boxes, output_formats=["numpy"])
    reference = sam1_export.onnx_backend.inner.encode(image)
    for a, b in zip(embedding.features, reference.features, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-3)
    for mine, theirs in zip(got, want, strict=True):
        assert iou(np.asarray(mine.mask), np.asarray(theirs.mask)) >= 0.999


@pytest.mark.parametrize(
    ("runtime", "onnx", "message"),
    [
        ({"precision": "fp16"}, {}, "fp32 or bf16"),
        ({"device": "cuda"}, {}, "CPU only"),
        ({}, {"quantize": "int8"}, "onnx.quantize"),
    ],
)
def test_unsupported_settings_are_refused(
    sam1_export: Exported, runtime: dict[str, Any], onnx: dict[str, Any], message: str
) -> None:
    config = onnx_config(sam1_export.config, sam1_export.fp32_dir, onnx, **runtime)
    config["runtime"]["backend"] = "openvino"
    with pytest.raises(ConfigError, match=message):
        Segmentor(config)


def test_bf16_needs_native_bf16(sam1_export: Exported, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cpu(monkeypatch, AVX2_ONLY)
    with pytest.raises(ConfigError, match="native bf16"):
        _openvino(sam1_export, precision="bf16")
