"""CPU feature detection: /proc/cpuinfo parsing, the derived capabilities, and the fallbacks off Linux."""

from __future__ import annotations

from pathlib import Path

import pytest

from perceptra_seg import hardware
from perceptra_seg.hardware import CpuFeatures, parse_cpuinfo

# first lines of /proc/cpuinfo on the two CPU classes (flags shortened to the ones that matter plus neighbours)
ZEN2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni clzero
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni clzero
"""
ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx f16c avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni gfni
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 avx512f avx_vnni avx512_bf16 avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8
"""
ALDER_LAKE = "model name\t: 12th Gen Intel(R) Core(TM) i7-12700\nflags\t\t: avx2 avx_vnni\n"


@pytest.mark.parametrize(
    ("text", "names", "native_bf16", "int8_dot32"),
    [
        (ZEN2, ["avx2"], False, False),
        (ZEN4, ["avx2", "avx512f", "avx512_bf16", "avx512_vnni"], True, True),
        (
            SAPPHIRE_RAPIDS,
            ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"],
            True,
            True,
        ),
        (ALDER_LAKE, ["avx2", "avx_vnni"], False, True),
        ("", [], False, False),
    ],
    ids=["zen2", "zen4", "sapphire-rapids", "alder-lake", "empty"],
)
def test_parse_cpuinfo(text: str, names: list[str], native_bf16: bool, int8_dot32: bool) -> None:
    features = parse_cpuinfo(text)
    assert features.names() == names
    assert (features.native_bf16, features.int8_dot32) == (native_bf16, int8_dot32)
    summary = features.as_dict()
    assert summary["native_bf16"] is native_bf16 and summary["source"] == "/proc/cpuinfo"


def test_model_name_and_flags_come_from_the_first_processor() -> None:
    features = parse_cpuinfo(ZEN2 + "model name\t: other\nflags\t\t: avx512f\n")
    assert features.model == "AMD EPYC 7B12" and not features.avx512f


def test_this_machine_reports_avx2_at_least() -> None:
    # every x86-64 CPU the project supports has AVX2 (both CPU classes of the suite)
    features = hardware.cpu_features()
    assert features.avx2 and hardware.cpu_features() is features  # read once per process


def test_without_proc_cpuinfo_the_torch_capability_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hardware, "_CPUINFO", tmp_path / "absent")
    hardware.cpu_features.cache_clear()
    try:
        features = hardware.cpu_features()
    finally:
        hardware.cpu_features.cache_clear()
    assert features.source == "torch" and features.avx2
    assert not features.native_bf16 and not features.int8_dot32  # torch's capability cannot tell: assume absent


def test_unknown_cpu_assumes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hardware, "_CPUINFO", tmp_path / "absent")
    monkeypatch.setattr(hardware, "_from_torch", lambda: None)
    hardware.cpu_features.cache_clear()
    try:
        features = hardware.cpu_features()
    finally:
        hardware.cpu_features.cache_clear()
    assert features.source == "unknown" and features.names() == [] and isinstance(features, CpuFeatures)
