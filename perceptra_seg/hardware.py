"""What this CPU can do natively: the instruction-set features that decide which reduced precisions are fast.

* AVX2: the baseline of the x86-64 CPUs we support.
* AVX-512F: wider float kernels (no effect on which precision is right, shown for information).
* AVX512-BF16 or AMX-BF16: native bf16 matrix products. Without them, bf16 autocast on CPU is emulated (converted
  to fp32 and back around every operation) and runs several times slower than fp32.
* AVX512-VNNI, AVX-VNNI or AMX-INT8: 8-bit dot products accumulated in 32 bits. Without them, ONNX Runtime's
  u8 × s8 kernels add products pairwise in 16 bits, which saturates (see
  :class:`perceptra_seg.backends.onnx_manifest.Quantization`).
* fp16 is never a fast CPU path (no CPU we run on has fp16 matrix units that autocast uses).

The features come from the ``flags`` line of ``/proc/cpuinfo`` (Linux); elsewhere from
``torch.backends.cpu.get_cpu_capability()`` when torch is installed (which tells AVX2 / AVX-512 but not bf16 or VNNI,
so those read as absent); else nothing is assumed. Code that decides from these features calls
:func:`cpu_features` through this module, so tests can substitute another CPU (``monkeypatch.setattr``).
"""

from __future__ import annotations

import functools
import importlib.util
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuFeatures", "cpu_features", "parse_cpuinfo"]

_CPUINFO = Path("/proc/cpuinfo")
#: /proc/cpuinfo flag → CpuFeatures field
_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512_bf16": "avx512_bf16",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "amx_tile": "amx_tile",
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
}


@dataclass(frozen=True)
class CpuFeatures:
    """Instruction-set features of the CPU (all ``False`` when unknown).

    Attributes:
        source: where they were read: ``/proc/cpuinfo``, ``torch`` (capability only) or ``unknown``.
        model: the CPU's model name when known.
    """

    avx2: bool = False
    avx512f: bool = False
    avx512_bf16: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    amx_tile: bool = False
    amx_bf16: bool = False
    amx_int8: bool = False
    source: str = "unknown"
    model: str | None = None

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix products run in hardware (AVX512-BF16 or AMX-BF16)."""
        return self.avx512_bf16 or self.amx_bf16

    @property
    def int8_dot32(self) -> bool:
        """8-bit dot products accumulate in 32 bits (AVX512-VNNI, AVX-VNNI or AMX-INT8): no 16-bit saturation."""
        return self.avx512_vnni or self.avx_vnni or self.amx_int8

    def names(self) -> list[str]:
        """The features present, as /proc/cpuinfo spells them."""
        return [flag for flag, attribute in _FLAGS.items() if getattr(self, attribute)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every flag, the derived ``native_bf16`` / ``int8_dot32``, source and model."""
        return {**asdict(self), "native_bf16": self.native_bf16, "int8_dot32": self.int8_dot32}


def parse_cpuinfo(text: str) -> CpuFeatures:
    """Features from the text of ``/proc/cpuinfo`` (the first processor's ``flags`` and ``model name``)."""
    flags: set[str] = set()
    model = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "model name" and model is None:
            model = value.strip() or None
    present = {attribute: flag in flags for flag, attribute in _FLAGS.items()}
    return CpuFeatures(**present, source=str(_CPUINFO), model=model)


def _from_torch() -> CpuFeatures | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    capability = str(torch.backends.cpu.get_cpu_capability()).upper()  # "AVX2", "AVX512", "DEFAULT", ...
    avx512 = capability.startswith("AVX512")
    return CpuFeatures(
        avx2=avx512 or capability == "AVX2", avx512f=avx512, source="torch", model=platform.processor() or None
    )


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's CPU features, read once per process (see the module docstring for the sources)."""
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    if "flags" in text:
        return parse_cpuinfo(text)
    return _from_torch() or CpuFeatures(model=platform.processor() or None)
