"""INT8 and fp16 exports: measured agreement with the fp32 torch backend, against documented floors.

Agreement is measured on the parity photos and prompts, single-mask output, and printed (``pytest -s``). The models
have random weights, whose logits hover near the threshold far more than trained SAM's do, so these floors are
conservative lower bounds for real checkpoints, not estimates of them (docs/onnx.md lists the numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from perceptra_seg import Segmentor
from perceptra_seg.backends.onnx_manifest import GRAPH_NAMES, INT8_QUANTIZATION, read_manifest

from .conftest import CASES, Exported, iou, scaled

# floors on (mean IoU, worst IoU, worst score difference) vs the torch backend, per precision and family
# (measured on these models: INT8 0.984 / 0.972 / 0.006 for SAM 1, 0.989 / 0.987 / 0.001 for SAM 2; fp16 0.9996 /
# 0.9995 / < 1e-4). The floors hold on both CPU classes: INT8 exports use uint8 weights, whose integer products are
# exact with and without VNNI (test_int8_weights_cannot_saturate_without_vnni); the signed weights used before gave
# 0.841 / 0.713 (SAM 1) and 0.908 / 0.876 (SAM 2) on an AVX2-only CPU. fp32/fp16 kernels differ between the classes
# only in summation order.
FLOORS = {
    ("int8", "sam1"): (0.95, 0.90, 0.05),
    ("int8", "sam2"): (0.95, 0.90, 0.05),
    ("fp16", "sam1"): (0.99, 0.98, 0.01),
}


def _agreement(reference: Segmentor, candidate: Segmentor, photos: dict[str, np.ndarray]) -> tuple[float, float, float]:
    ious, score_gaps = [], []
    for image in photos.values():
        prompts = [scaled(p, image.shape[:2]) for p in CASES.values()]
        for want, got in zip(
            reference.segment(image, prompts=prompts), candidate.segment(image, prompts=prompts), strict=True
        ):
            ious.append(iou(want.mask, got.mask))
            score_gaps.append(abs(want.score - got.score))
    return float(np.mean(ious)), float(np.min(ious)), float(np.max(score_gaps))


@pytest.mark.parametrize(("precision", "family"), list(FLOORS), ids=[f"{p}-{f}" for p, f in FLOORS])
def test_reduced_precision_agreement(
    precision: str,
    family: str,
    request: pytest.FixtureRequest,
    derive: Callable[..., Path],
    photos: dict[str, np.ndarray],
) -> None:
    exported: Exported = request.getfixturevalue(f"{family}_export")
    options = {"quantize": "int8"} if precision == "int8" else {"fp16": True}
    directory = derive(exported, **options)
    manifest = read_manifest(directory)
    assert manifest.precision == precision
    fp32 = read_manifest(exported.fp32_dir)
    if precision == "int8":
        assert all(graph.precision == "int8" for graph in manifest.graphs.values())
        assert manifest.graphs["decoder_single"].bytes < 0.6 * fp32.graphs["decoder_single"].bytes
    else:  # fp16 encoder, fp32 decoders
        assert manifest.graphs["encoder"].precision == "fp16"
        assert manifest.graphs["decoder_single"].precision == "fp32"
        assert manifest.graphs["encoder"].bytes < 0.6 * fp32.graphs["encoder"].bytes
    if precision == "int8":
        candidate = exported.segmentor(directory, onnx={"quantize": "int8"})
    else:
        candidate = exported.segmentor(directory, precision="fp16")
    mean_iou, worst_iou, worst_score = _agreement(exported.torch, candidate, photos)
    print(f"\n{precision} {family}: IoU mean {mean_iou:.4f} worst {worst_iou:.4f}, max |score diff| {worst_score:.4f}")
    floor_mean, floor_worst, ceiling_score = FLOORS[(precision, family)]
    assert candidate.backend.info()["precision"] == precision
    assert mean_iou >= floor_mean and worst_iou >= floor_worst and worst_score <= ceiling_score


def test_int8_weights_cannot_saturate_without_vnni(derive: Callable[..., Path], sam1_export: Exported) -> None:
    """Every quantised MatMul has uint8 weights (U8U8): exact 32-bit products on AVX2 and AVX-512 alike.

    Signed weights with uint8 activations (the old export) overflow the 16-bit pair sums of AVX2's u8 x s8 kernel
    (255 x 127 x 2 = 64770 > 32767); uint8 x uint8 is computed with 16-bit operands and 32-bit sums there.
    """
    directory = derive(sam1_export, quantize="int8")
    manifest = read_manifest(directory)
    assert manifest.quantization == INT8_QUANTIZATION and not manifest.quantization.saturates_without_vnni
    assert manifest.quantization.weight_type == "uint8"
    for name in GRAPH_NAMES:
        graph = onnx.load(str(directory / manifest.graphs[name].file)).graph
        weights = {tensor.name: tensor.data_type for tensor in graph.initializer}
        quantized = [node for node in graph.node if node.op_type == "MatMulInteger"]
        assert quantized, f"{name}: no quantised MatMul"
        kinds = {onnx.TensorProto.DataType.Name(weights[node.input[1]]) for node in quantized}
        assert kinds == {"UINT8"}, f"{name}: MatMul weights {kinds}"
