"""Two CPU classes the suite must hold on, as :class:`perceptra_seg.hardware.CpuFeatures`, and a way to pretend.

Substituting the feature source tests our decisions (``precision: auto``, warnings, INT8 checks) for both classes on
any machine; it does not claim that the real hardware behaves (that is measured, see docs/onnx.md and docs/config.md).
"""

from __future__ import annotations

import pytest

from perceptra_seg import hardware
from perceptra_seg.hardware import CpuFeatures

#: AVX2 only: AMD EPYC Zen 2 (no AVX-512, no VNNI, no native bf16)
AVX2_ONLY = CpuFeatures(avx2=True, source="test", model="AMD EPYC 7B12 (Zen 2)")
#: AVX-512 with BF16 and VNNI: AMD EPYC Zen 4
AVX512_BF16 = CpuFeatures(
    avx2=True, avx512f=True, avx512_bf16=True, avx512_vnni=True, source="test", model="AMD EPYC 9B14 (Zen 4)"
)


def pretend_cpu(monkeypatch: pytest.MonkeyPatch, features: CpuFeatures) -> None:
    """Make :func:`perceptra_seg.hardware.cpu_features` report ``features`` for the rest of the test."""
    monkeypatch.setattr(hardware, "cpu_features", lambda: features)
