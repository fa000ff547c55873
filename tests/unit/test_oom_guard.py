"""One out-of-memory guard for the torch backend and the REST service's inference runner."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from perceptra_seg import Prompt, ResourceExhaustedError
from perceptra_seg.backends import oom
from perceptra_seg.backends.oom import is_out_of_memory, oom_guard
from perceptra_seg.prompts import build_batches


@pytest.fixture
def empty_cache_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pretend CUDA is present and count ``torch.cuda.empty_cache`` calls (no device is touched)."""
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


def test_guard_translates_host_and_device_oom_and_releases_memory(empty_cache_calls: list[int]) -> None:
    gpu = r"^out of GPU memory while encoding: Tried to allocate 2 GiB$"
    with pytest.raises(ResourceExhaustedError, match=gpu), oom_guard("while encoding"):
        raise torch.cuda.OutOfMemoryError("Tried to allocate 2 GiB")
    host = r"^out of memory during inference$"
    with pytest.raises(ResourceExhaustedError, match=host), oom_guard("during inference", detail=False):
        raise MemoryError("host allocator details")
    assert len(empty_cache_calls) == 2
    assert is_out_of_memory(torch.OutOfMemoryError("x")) and not is_out_of_memory(RuntimeError("out of memory"))


def test_guard_lets_other_errors_through(empty_cache_calls: list[int]) -> None:
    with pytest.raises(RuntimeError, match="shape mismatch"), oom_guard("while decoding"):
        raise RuntimeError("shape mismatch")
    already = ResourceExhaustedError("queue full")
    with pytest.raises(ResourceExhaustedError) as caught, oom_guard("while decoding"):
        raise already
    assert caught.value is already and empty_cache_calls == []


def test_torch_backend_host_oom_is_resource_exhausted(
    small_segmentor: Any, photos: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a host MemoryError in the torch encoder escaped as MemoryError (only CUDA OOM was translated)."""
    backend = small_segmentor.backend
    image = photos["coffee"]
    embedding = backend.encode(image)
    ((_, batch),) = build_batches([Prompt(box=(10.0, 10.0, 60.0, 60.0))], image.shape[:2], backend.family)

    def out_of_host_memory(*_: Any, **__: Any) -> Any:
        raise MemoryError()

    monkeypatch.setattr(backend, "_encoder", out_of_host_memory)
    monkeypatch.setattr(backend, "model", out_of_host_memory)
    with pytest.raises(ResourceExhaustedError, match="^out of memory while encoding$"):
        backend.encode(image)
    with pytest.raises(ResourceExhaustedError, match="^out of memory while decoding$"):
        backend.decode(embedding, batch, multimask=False)


def test_the_service_runner_uses_the_shared_guard() -> None:
    """limits.py holds no OOM matching of its own (it used to match exception class names)."""
    from perceptra_seg.service import limits

    assert limits.oom_guard is oom.oom_guard and not hasattr(limits, "_release_device_memory")
