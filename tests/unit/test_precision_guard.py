"""Accuracy guard of ``precision: auto``: every reduced precision it picks, for every model on every CPU class and on
CUDA, is backed by measured mask agreement with fp32 at IoU >= 0.97 (``precision.MEASURED_AGREEMENT``: random weights
on the bench photographs, and the demo model's learned weights on its held-out scenes)."""

from __future__ import annotations

import pytest

from perceptra_seg.backends import precision as precision_module
from perceptra_seg.backends.precision import (
    AUTO_IOU_FLOOR,
    BF16_CPU_MEASURED,
    MEASURED_AGREEMENT,
    Agreement,
    decide_auto,
    decide_openvino_auto,
    path_measured_safe,
)
from perceptra_seg.hardware import CpuFeatures
from perceptra_seg.registry import list_models

from ..cpus import AVX2_ONLY, AVX512_BF16, pretend_cpu

MODELS = sorted({(spec.family, spec.precision_key) for spec in list_models()})


def _measurements(where: str, precision: str, family: str, variant: str) -> list[Agreement]:
    return [
        a
        for a in MEASURED_AGREEMENT
        if (a.where, a.precision, a.family, a.variant, a.weights) == (where, precision, family, variant, "random")
    ]


@pytest.mark.parametrize("cpu", [AVX2_ONLY, AVX512_BF16], ids=["avx2", "avx512-bf16"])
def test_auto_on_cpu_picks_only_paths_measured_above_the_floor(
    monkeypatch: pytest.MonkeyPatch, cpu: CpuFeatures
) -> None:
    pretend_cpu(monkeypatch, cpu)
    demo = [a for a in MEASURED_AGREEMENT if (a.where, a.precision, a.weights) == ("cpu", "bf16", "demo")]
    assert demo, "the bf16 path's real-weights check (demo model, held-out scenes) must be in the table"
    picked = []
    for family, variant in MODELS:
        chosen, reason = decide_auto("cpu", family, variant)
        if chosen == "fp32":
            continue
        picked.append(variant)
        assert chosen == "bf16" and cpu.native_bf16, reason
        rows = _measurements("cpu", "bf16", family, variant)
        assert rows and all(a.min_iou >= AUTO_IOU_FLOOR for a in rows), (variant, rows)
        assert all(a.mean_iou is not None and a.mean_iou >= AUTO_IOU_FLOOR for a in [*rows, *demo])
    assert sorted(picked) == ([] if not cpu.native_bf16 else sorted(v for _, v in BF16_CPU_MEASURED))


def test_auto_on_cuda_picks_only_paths_measured_above_the_floor() -> None:
    for family, variant in MODELS:
        chosen, _ = decide_auto("cuda", family, variant, cuda_capability=(9, 0))
        if chosen == "fp32":
            continue
        rows = _measurements("cuda", chosen, family, variant)
        assert rows and all(a.min_iou >= AUTO_IOU_FLOOR for a in rows), (variant, chosen, rows)


def test_the_table_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ("sam2", "hiera_small") not in BF16_CPU_MEASURED  # worst prompt 0.968 < 0.97
    assert {("sam1", "vit_b"), ("sam2", "hiera_tiny")} <= BF16_CPU_MEASURED
    assert decide_auto("cuda", "sam2", "hiera_base_plus", cuda_capability=(9, 0))[0] == "fp32"  # not measured
    assert decide_auto("cuda", "sam1", "vit_h", cuda_capability=(9, 0))[0] == "fp32"  # SAM 1: vit_b measured 0.723
    assert path_measured_safe("cpu", "bf16", "sam1", "vit_b")
    # a real-weights check under the floor takes the path away from every model
    worse = Agreement("cpu", "bf16", "sam1", "tiny", "demo", 0.95, 0.5, "test")
    monkeypatch.setattr(precision_module, "MEASURED_AGREEMENT", (*MEASURED_AGREEMENT, worse))
    assert not path_measured_safe("cpu", "bf16", "sam1", "vit_b")
    # so does one random-weight measurement of the model under the floor
    low = Agreement("cpu", "bf16", "sam2", "hiera_tiny", "random", 0.99, 0.9, "test")
    monkeypatch.setattr(precision_module, "MEASURED_AGREEMENT", (*MEASURED_AGREEMENT, low))
    assert not path_measured_safe("cpu", "bf16", "sam2", "hiera_tiny")
    assert path_measured_safe("cpu", "bf16", "sam1", "vit_b")


@pytest.mark.parametrize("cpu", [AVX2_ONLY, AVX512_BF16], ids=["avx2", "avx512-bf16"])
def test_openvino_auto_picks_bf16_only_where_measured(monkeypatch: pytest.MonkeyPatch, cpu: CpuFeatures) -> None:
    pretend_cpu(monkeypatch, cpu)
    demo = [a for a in MEASURED_AGREEMENT if (a.where, a.precision, a.weights) == ("cpu-openvino", "bf16", "demo")]
    assert demo and all(a.mean_iou is not None and a.mean_iou >= AUTO_IOU_FLOOR for a in demo)
    picked = set()
    for family, variant in MODELS:
        chosen, reason = decide_openvino_auto(family, variant)
        if chosen == "fp32":
            continue
        picked.add(variant)
        rows = _measurements("cpu-openvino", "bf16", family, variant)
        assert chosen == "bf16" and rows and all(a.min_iou >= AUTO_IOU_FLOOR for a in rows), reason
    assert picked == (set() if not cpu.native_bf16 else {"hiera_tiny", "hiera_small", "vit_b"})
    assert decide_openvino_auto("sam1", "vit_b", custom_architecture=True)[0] == "fp32"
