"""Resident memory of benchmark processes (Linux ``/proc``; ``getrusage`` elsewhere).

Every configuration runs in its own worker process, so the peak resident set size (``VmHWM``) of that process is the
peak of that configuration alone: model load (checkpoint + network), encoder activations, cached embeddings and
the Python/torch runtime itself. The REST rows read the server process's own peak the same way.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

__all__ = ["current_rss_mb", "peak_rss_mb", "process_memory_mb"]

_MB = 1024 * 1024


def _status_fields(pid: int | str) -> dict[str, int]:
    """``VmRSS`` / ``VmHWM`` of ``/proc/<pid>/status`` in bytes (empty where ``/proc`` is missing or the process
    is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            number, _, unit = value.strip().partition(" ")
            fields[name] = int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    return fields


def process_memory_mb(pid: int) -> dict[str, float]:
    """``{"rss_mb": current, "peak_rss_mb": high-water mark}`` of another live process (empty when unreadable)."""
    fields = _status_fields(pid)
    out: dict[str, float] = {}
    if "VmRSS" in fields:
        out["rss_mb"] = round(fields["VmRSS"] / _MB, 1)
    if "VmHWM" in fields:
        out["peak_rss_mb"] = round(fields["VmHWM"] / _MB, 1)
    return out


def current_rss_mb() -> float | None:
    """This process's resident set size now, in MiB (``None`` without ``/proc``)."""
    fields = _status_fields("self")
    return round(fields["VmRSS"] / _MB, 1) if "VmRSS" in fields else None


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (_MB if sys.platform == "darwin" else 1024), 1)
