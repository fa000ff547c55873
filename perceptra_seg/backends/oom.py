"""The one out-of-memory guard: host or device OOM inside a block becomes :class:`ResourceExhaustedError` (503).

Used around the torch backend's encoder and decoder calls and around every inference call the REST service runs,
so a backend that does not translate its own OOM (a custom backend, a host ``MemoryError``) is still answered as
"out of memory", never as a 500. Device memory is released (``torch.cuda.empty_cache``) before raising, so the
next request starts from a clean allocator. torch is never imported here: only looked up when already loaded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from ..exceptions import ResourceExhaustedError

__all__ = ["is_out_of_memory", "oom_guard", "release_device_memory"]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a host :class:`MemoryError` and for torch's ``OutOfMemoryError`` (CUDA or any other device)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    # torch.OutOfMemoryError since torch 2.5 (device-neutral); torch.cuda.OutOfMemoryError is it or its older name.
    candidates = (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
    return any(isinstance(kind, type) and isinstance(exc, kind) for kind in candidates)


def release_device_memory() -> None:
    """Return cached CUDA blocks to the driver (a no-op without torch or without CUDA)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def oom_guard(during: str, *, detail: bool = True) -> Iterator[None]:
    """Turn an out-of-memory error raised in the block into ``ResourceExhaustedError``.

    Args:
        during: what ran, for the message (``"while encoding"`` → ``"out of GPU memory while encoding"``).
        detail: append the original message (the allocator's "Tried to allocate 2.00 GiB ..."); the REST service
            passes ``False`` so that nothing but the fixed text reaches a client.

    Other exceptions, and a ``ResourceExhaustedError`` raised inside, pass through unchanged.
    """
    try:
        yield
    except Exception as exc:
        if isinstance(exc, ResourceExhaustedError) or not is_out_of_memory(exc):
            raise
        release_device_memory()
        where = "memory" if isinstance(exc, MemoryError) else "GPU memory"
        text = str(exc) if detail else ""
        raise ResourceExhaustedError(f"out of {where} {during}" + (f": {text}" if text else "")) from None
