"""The byte form of image embeddings kept in Redis (perceptra_seg.service.embedding_codec)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from perceptra_seg import Segmentor
from perceptra_seg.backends.base import ImageEmbedding
from perceptra_seg.exceptions import ConfigError, InvalidInputError
from perceptra_seg.service.embedding_codec import pack, packed_nbytes, unpack
from tests.conftest import build_reference_sam2, save_meta_checkpoint

#: SAM 2's three feature levels for a 1024 input (hiera: image embedding plus two high-resolution levels).
SAM2_SHAPES = [(1, 256, 64, 64), (1, 32, 256, 256), (1, 64, 128, 128)]


def _embedding(features: Any, nbytes: int = 123) -> ImageEmbedding:
    return ImageEmbedding((480, 640), (768, 1024), features=features, nbytes=nbytes)


def _arrays(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(0, 3, shape).astype(np.float32) for shape in SAM2_SHAPES)


def test_float32_round_trip_is_exact_for_every_feature_level() -> None:
    arrays = _arrays()
    stored = unpack(pack(_embedding(arrays), fingerprint="m|v|torch|cpu|fp32|abc", dtype="float32"))
    assert stored.fingerprint == "m|v|torch|cpu|fp32|abc" and stored.kind == "numpy"
    restored = stored.embedding()
    assert restored.original_size == (480, 640) and restored.input_size == (768, 1024) and restored.nbytes == 123
    assert len(restored.features) == 3
    for original, back in zip(arrays, restored.features, strict=True):
        assert back.dtype == np.float32 and np.array_equal(original, back)


def test_float16_halves_the_bytes_and_keeps_values_close() -> None:
    arrays = _arrays(1)
    full = pack(_embedding(arrays), fingerprint="f", dtype="float32")
    half = pack(_embedding(arrays), fingerprint="f", dtype="float16")
    assert len(half) < 0.501 * len(full)
    assert packed_nbytes(_embedding(arrays), "float16") == sum(a.size for a in arrays) * 2
    for original, back in zip(arrays, unpack(half).embedding().features, strict=True):
        assert back.dtype == np.float32
        np.testing.assert_allclose(back, original, rtol=1e-3, atol=1e-3)


def test_float16_keeps_an_array_outside_its_range_in_float32() -> None:
    arrays = (np.array([[1.0, 70000.0]], dtype=np.float32), np.array([0.5], dtype=np.float32))
    back = unpack(pack(_embedding(arrays), fingerprint="f", dtype="float16")).embedding().features
    assert np.array_equal(back[0], arrays[0])  # not inf
    assert back[1][0] == 0.5


def test_torch_features_come_back_as_tensors_and_none_stays_none() -> None:
    tensors = tuple(torch.from_numpy(a) for a in _arrays(2))
    stored = unpack(pack(_embedding(tensors), fingerprint="f", dtype="float32"))
    assert stored.kind == "torch"
    back = stored.embedding(torch.device("cpu")).features
    assert all(isinstance(t, torch.Tensor) and torch.equal(t, o) for t, o in zip(back, tensors, strict=True))
    empty = unpack(pack(_embedding(None, nbytes=4096), fingerprint="fake", dtype="float16")).embedding()
    assert empty.features is None and empty.nbytes == 4096


@pytest.mark.parametrize(
    "data", [b"", b"not an embedding", b"PSE1\xff\xff\x00\x00{", None], ids=["empty", "foreign", "header", "cut"]
)
def test_unreadable_values_are_clear_errors(data: bytes | None) -> None:
    if data is None:  # a value cut short
        data = pack(_embedding(_arrays()), fingerprint="f", dtype="float32")[:-10]
    with pytest.raises(InvalidInputError, match="stored embedding is unreadable"):
        unpack(data)


def test_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from perceptra_seg.service.redis_link import import_redis

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=r"perceptra-seg\[redis\]"):
        import_redis()


def test_a_sam2_embedding_survives_the_round_trip(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    """A real SAM 2.1 (hiera tiny, random weights) embedding with its high-resolution levels: float32 storage gives
    the same masks exactly, float16 storage masks at IoU >= 0.99 (measured 1.0), through a second Segmentor that
    only adopted the stored embedding."""
    model = build_reference_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", seed=4)
    checkpoint = save_meta_checkpoint(model, tmp_path / "sam2.1_hiera_tiny.pt", sam2=True)
    del model
    config = {
        "model": {"name": "sam_v2", "variant": "hiera_tiny", "checkpoint_path": str(checkpoint)},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    image = np.ascontiguousarray(photos["chelsea"][::2, ::2])
    box = [40.0, 20.0, 200.0, 140.0]
    with Segmentor(config) as first:
        handle = first.embed(image)
        embedding = first.embedded(handle)
        assert len(embedding.features) == 3  # image embedding + two high-resolution levels
        expected = first.segment_from_box(handle, box).mask
        for dtype, floor in (("float32", 1.0), ("float16", 0.99)):
            stored = unpack(pack(embedding, fingerprint=first.backend.fingerprint, dtype=dtype))
            second = Segmentor(config, backend=first.backend)
            second.adopt(handle.image_id, stored.embedding(torch.device("cpu")))
            mask = second.segment_from_box(handle, box).mask
            assert expected.any()
            iou = (mask & expected).sum() / (mask | expected).sum()
            assert iou >= floor, (dtype, iou)
