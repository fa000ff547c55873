"""Segmentor seams: no digest without a cache, embed() that cannot be cached, closed backends, one OOM guard."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import perceptra_seg.core as core
from perceptra_seg import BackendError, ConfigError, Segmentor

from ..conftest import CountingBackend

BOXES = [(20, 20, 120, 140), (440, 280, 590, 390)]  # far apart: two tiling windows


@pytest.mark.parametrize("tiling", [False, True])
def test_no_image_digest_when_the_cache_is_off(
    counting_segmentor: Any, photos: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch, tiling: bool
) -> None:
    """The full-image SHA-256 only feeds cache keys: with ``cache.enabled = false`` it is never computed."""
    calls: list[tuple[int, ...]] = []
    real = core.image_digest

    def counting_digest(pixels: np.ndarray) -> str:
        calls.append(pixels.shape)
        return real(pixels)

    monkeypatch.setattr(core, "image_digest", counting_digest)
    tiles = {"enabled": tiling, "min_image_side": 256, "window_size": 160, "margin": 16}
    image = photos["coffee"]
    off = counting_segmentor(cache={"enabled": False}, tiling=tiles)
    masks_off = [r.mask for r in off.segment(image, boxes=BOXES)]
    assert calls == [] and off.backend.encode_calls >= 1
    on = counting_segmentor(tiling=tiles)
    masks_on = [r.mask for r in on.segment(image, boxes=BOXES)]
    assert calls == [image.shape]  # once per call, even with several tiling windows
    assert on.backend.encode_calls == off.backend.encode_calls == (2 if tiling else 1)
    assert all(np.array_equal(a, b) for a, b in zip(masks_off, masks_on, strict=True))


def test_embed_refuses_an_embedding_the_cache_cannot_hold(
    counting_segmentor: Any, photos: dict[str, np.ndarray]
) -> None:
    """Before: embed() returned a handle that was never stored, and its first use raised NotFoundError."""
    image = photos["coffee"]
    nbytes = counting_segmentor().backend.inner.encode(image).nbytes
    tight = counting_segmentor(cache={"max_bytes": nbytes - 1})
    with pytest.raises(ConfigError, match=rf"takes {nbytes} bytes.*cache\.max_bytes = {nbytes - 1}"):
        tight.embed(image)
    assert tight.cache_stats().entries == 0
    exact = counting_segmentor(cache={"max_bytes": nbytes})
    handle = exact.embed(image)  # fits exactly: stored, and usable
    by_handle, direct = (exact.segment(source, boxes=BOXES[:1])[0].mask for source in (handle, image))
    assert np.array_equal(by_handle, direct)
    assert exact.cache_stats().entries == 1


class GatedBackend(CountingBackend):
    """A backend whose encoder waits at a gate, and that refuses work once closed (like the real ones)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.started = threading.Event()
        self.gate = threading.Event()
        self.closed = False

    def encode(self, image: np.ndarray) -> Any:
        self.started.set()
        assert self.gate.wait(30), "test gate never opened"
        if self.closed:
            raise BackendError("the gated backend is closed")
        return super().encode(image)

    def decode(self, embedding: Any, batch: Any, *, multimask: bool) -> Any:
        if self.closed:
            raise BackendError("the gated backend is closed")
        return super().decode(embedding, batch, multimask=multimask)

    def close(self) -> None:
        self.closed = True


def _run_in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(call())
        except Exception as exc:  # reported to the test thread
            out.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


@pytest.mark.parametrize("action", ["close", "set_backend"])
def test_close_and_set_backend_wait_for_running_calls(
    small_segmentor: Any, photos: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """Before: close()/set_backend() closed the backend under a running call, which then failed half-way."""
    first = GatedBackend(small_segmentor.backend)
    seg = Segmentor(small_segmentor.config, backend=first)
    second = GatedBackend(small_segmentor.backend)
    second.gate.set()
    monkeypatch.setattr(core, "create_backend", lambda config: second)
    thread, out = _run_in_thread(lambda: seg.segment(photos["coffee"], boxes=BOXES[:1]))
    assert first.started.wait(30)
    if action == "close":
        seg.close()
    else:
        seg.set_backend("torch")
        assert seg.backend is second  # new calls get the new backend at once
    assert not first.closed  # the running call still holds it
    first.gate.set()
    thread.join(30)
    assert not isinstance(out[0], Exception), out[0]
    assert out[0][0].area > 0 and first.closed  # closed by the last call, right after it returned
    if action == "close":
        with pytest.raises(BackendError, match="closed"):
            seg.segment(photos["coffee"], boxes=BOXES[:1])
    else:
        assert seg.segment(photos["coffee"], boxes=BOXES[:1])[0].area > 0 and not second.closed


def test_a_closed_torch_backend_raises_a_clear_error(
    small_sam1_config: dict[str, Any], photos: dict[str, np.ndarray]
) -> None:
    """Before: torch close() only moved the model to the CPU and later calls ran on; ONNX already refused."""
    seg = Segmentor(small_sam1_config)
    seg.segment(photos["coffee"], boxes=BOXES[:1])
    seg.close()
    seg.close()  # idempotent
    with pytest.raises(BackendError, match="^the torch backend is closed$"):
        seg.segment(photos["coffee"], boxes=BOXES[:1])
    with pytest.raises(BackendError, match="^the torch backend is closed$"):
        seg.backend.encode(photos["coffee"])


def test_an_incomplete_backend_object_is_refused_by_name() -> None:
    """An object missing a protocol member is a ConfigError naming it, not silently replaced by the configured
    model's backend."""

    class NoHook:  # every member but the check_prompts hook (a custom backend written before it existed)
        family = "sam1"
        fingerprint = "custom"
        mask_size = 256
        encode = decode = info = close = staticmethod(lambda *a, **k: None)

    with pytest.raises(ConfigError, match=r"lacks \['check_prompts'\]"):
        Segmentor(backend=NoHook())  # type: ignore[arg-type]
