"""Segmentor seams: no digest without a cache, embed() that cannot be cached, closed backends, one OOM guard."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import perceptra_seg.core as core
from perceptra_seg import ConfigError

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
