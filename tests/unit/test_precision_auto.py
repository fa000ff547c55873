"""runtime.precision: what ``auto`` resolves to per device, CPU class and model, and the emulated-precision warning.

The CPU is substituted (tests/cpus.py), so both CPU classes are checked on any machine.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from perceptra_seg import Segmentor, SegmentorConfig
from perceptra_seg.backends import precision as precision_module
from perceptra_seg.backends.precision import resolve_torch_precision
from perceptra_seg.hardware import CpuFeatures

from ..cpus import AVX2_ONLY, AVX512_BF16, pretend_cpu


def test_auto_is_the_default() -> None:
    assert SegmentorConfig.load(None).runtime.precision == "auto"


@pytest.mark.parametrize(
    ("cpu", "family", "variant", "custom", "expected"),
    [
        (AVX512_BF16, "sam1", "vit_b", False, "bf16"),  # measured: worst IoU 0.981 >= 0.97, 1.57x faster
        (AVX512_BF16, "sam2", "hiera_tiny", False, "bf16"),  # measured: 0.980, 1.56x
        (AVX512_BF16, "sam2", "hiera_small", False, "fp32"),  # measured: 0.968 < 0.97
        (AVX512_BF16, "sam1", "vit_h", False, "fp32"),  # not measured
        (AVX512_BF16, "sam1", "vit_b", True, "fp32"),  # custom architecture: not measured
        (AVX2_ONLY, "sam1", "vit_b", False, "fp32"),  # bf16 emulated: slower than fp32
        (AVX2_ONLY, "sam2", "hiera_tiny", False, "fp32"),
    ],
)
def test_auto_on_cpu(
    monkeypatch: pytest.MonkeyPatch, cpu: CpuFeatures, family: Any, variant: str, custom: bool, expected: str
) -> None:
    pretend_cpu(monkeypatch, cpu)
    assert (
        resolve_torch_precision("auto", device_type="cpu", family=family, variant=variant, custom_architecture=custom)
        == expected
    )


@pytest.mark.parametrize(
    ("family", "variant", "capability", "expected"),
    [
        ("sam2", "hiera_small", (9, 0), "fp16"),  # H200: worst IoU 0.999 vs fp32 (bf16: 0.369)
        ("sam2", "hiera_tiny", (7, 0), "fp16"),  # tensor cores from compute capability 7.0
        ("sam2", "hiera_small", (6, 1), "fp32"),
        ("sam2", "hiera_small", None, "fp32"),
        ("sam1", "vit_b", (9, 0), "fp32"),  # fp16 worst IoU 0.723 on random weights
    ],
)
def test_auto_on_cuda(family: Any, variant: str, capability: tuple[int, int] | None, expected: str) -> None:
    assert (
        resolve_torch_precision("auto", device_type="cuda", family=family, variant=variant, cuda_capability=capability)
        == expected
    )


@pytest.mark.parametrize("explicit", ["fp32", "fp16", "bf16"])
def test_explicit_precision_is_kept(monkeypatch: pytest.MonkeyPatch, explicit: str) -> None:
    pretend_cpu(monkeypatch, AVX2_ONLY)
    assert resolve_torch_precision(explicit, device_type="cpu", family="sam1", variant="vit_b") == explicit


@pytest.mark.parametrize("cpu", [AVX2_ONLY, AVX512_BF16], ids=["avx2", "avx512-bf16"])
def test_backend_reports_and_keys_on_the_resolved_precision(
    monkeypatch: pytest.MonkeyPatch, cpu: CpuFeatures, small_sam1_config: dict[str, Any]
) -> None:
    pretend_cpu(monkeypatch, cpu)
    segmentor = Segmentor(small_sam1_config)  # precision auto (the default); a custom (reduced) architecture
    assert segmentor.config.runtime.precision == "auto"
    assert segmentor.backend.info()["precision"] == "fp32"
    assert segmentor.backend.fingerprint.split("|")[4] == "fp32" and "auto" not in segmentor.backend.fingerprint


@pytest.mark.parametrize(("cpu", "expected"), [(AVX2_ONLY, "fp32"), (AVX512_BF16, "bf16")], ids=["avx2", "avx512-bf16"])
def test_segmentor_resolves_auto_per_cpu_class(
    monkeypatch: pytest.MonkeyPatch, cpu: CpuFeatures, expected: str
) -> None:
    """End to end through Segmentor and TorchBackend (the packaged demo model, counted as a measured variant here):
    a CPU without native bf16 runs fp32, one with it bf16; info(), the fingerprint and cache keys say which."""
    monkeypatch.setattr(precision_module, "BF16_CPU_MEASURED", frozenset({("sam1", "tiny")}))
    pretend_cpu(monkeypatch, cpu)
    segmentor = Segmentor(model="demo", device="cpu")
    assert segmentor.config.runtime.precision == "auto"
    assert segmentor.backend.info()["precision"] == expected
    assert segmentor.backend.fingerprint.split("|")[4] == expected


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    name = precision_module.__name__
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == logging.WARNING]


def test_emulated_bf16_warns_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, small_sam1_config: dict[str, Any]
) -> None:
    monkeypatch.setattr(precision_module, "_warned", set())
    pretend_cpu(monkeypatch, AVX2_ONLY)
    config = {**small_sam1_config, "runtime": {"device": "cpu", "precision": "bf16"}}
    with caplog.at_level(logging.WARNING):
        first = Segmentor(config)
        Segmentor(config)
    assert first.backend.info()["precision"] == "bf16"  # honoured, not silently changed
    (message,) = _warnings(caplog)
    assert "without AVX512_BF16 or AMX_BF16" in message and "emulated" in message and "slower than fp32" in message


def test_native_bf16_does_not_warn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, small_sam1_config: dict[str, Any]
) -> None:
    monkeypatch.setattr(precision_module, "_warned", set())
    pretend_cpu(monkeypatch, AVX512_BF16)
    with caplog.at_level(logging.WARNING):
        Segmentor({**small_sam1_config, "runtime": {"device": "cpu", "precision": "bf16"}})
    assert _warnings(caplog) == []


@pytest.mark.parametrize("cpu", [AVX2_ONLY, AVX512_BF16], ids=["avx2", "avx512-bf16"])
def test_fp16_on_cpu_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cpu: CpuFeatures) -> None:
    monkeypatch.setattr(precision_module, "_warned", set())
    pretend_cpu(monkeypatch, cpu)
    with caplog.at_level(logging.WARNING):
        assert precision_module.warn_if_emulated("fp16", "cpu") is not None
        precision_module.warn_if_emulated("fp16", "cpu")
        assert precision_module.warn_if_emulated("fp16", "cuda") is None
        assert precision_module.warn_if_emulated("fp32", "cpu") is None
    (message,) = _warnings(caplog)
    assert "fp16 on CPU" in message and "slower than fp32" in message
