"""Segmentor behaviour on a reduced random-weight SAM 1 (real architecture, real conversion path)."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import perceptra_seg
from perceptra_seg import (
    ConfigError,
    EmbeddedImage,
    ImageTooLargeError,
    InvalidInputError,
    NotFoundError,
    Segmentor,
)

from ..conftest import segment_anything

BOXES = [(60, 40, 300, 260), (200, 100, 420, 330), (20, 20, 120, 140)]


def test_public_api_is_explicit() -> None:
    assert set(perceptra_seg.__all__) == {
        "AuthError",
        "BackendError",
        "ConfigError",
        "EmbeddedImage",
        "ImageTooLargeError",
        "InvalidInputError",
        "ModelLoadError",
        "NotFoundError",
        "Prompt",
        "ResourceExhaustedError",
        "SegmentationResult",
        "Segmentor",
        "SegmentorConfig",
        "SegmentorError",
        "__version__",
    }
    for name in perceptra_seg.__all__:
        assert hasattr(perceptra_seg, name)
    assert issubclass(perceptra_seg.ImageTooLargeError, perceptra_seg.InvalidInputError)
    assert all(
        issubclass(getattr(perceptra_seg, n), perceptra_seg.SegmentorError)
        for n in perceptra_seg.__all__
        if n.endswith("Error") and n != "SegmentorError"
    )


def test_second_prompt_on_same_image_skips_encoder(counting_segmentor: Any, photos: dict[str, np.ndarray]) -> None:
    seg = counting_segmentor()
    image = photos["coffee"]
    first = seg.segment_from_box(image, box=BOXES[0])
    seg.segment_from_points(image, points=[(150, 150, 1)])
    seg.segment(image.copy(), boxes=BOXES)  # equal pixels, different array object: still a hit
    assert seg.backend.encode_calls == 1
    stats = seg.cache_stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 1, 1)
    assert first.request_id and first.latency_ms > 0 and first.model_info["model"] == "sam_v1"


def test_cache_disabled_and_byte_bound(counting_segmentor: Any, photos: dict[str, np.ndarray]) -> None:
    off = counting_segmentor(cache={"enabled": False})
    for _ in range(2):
        off.segment_from_box(photos["coffee"], box=BOXES[0])
    assert off.backend.encode_calls == 2
    probe = off.backend.inner.encode(photos["coffee"])
    tight = counting_segmentor(cache={"max_bytes": probe.nbytes})  # room for exactly one embedding
    for name in ["coffee", "chelsea", "coffee"]:
        tight.segment_from_box(photos[name], box=BOXES[2])
    assert tight.backend.encode_calls == 3 and tight.cache_stats().evictions == 2


def test_concurrent_requests_for_one_image_encode_once(counting_segmentor: Any, photos: dict[str, np.ndarray]) -> None:
    seg = counting_segmentor(delay_s=0.3)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda b=b: results.append(seg.segment_from_box(photos["chelsea"], box=b)))
        for b in BOXES * 2
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and seg.backend.encode_calls == 1


def test_strategies(small_segmentor: Segmentor, photos: dict[str, np.ndarray]) -> None:
    image = photos["coffee"]
    every = small_segmentor.segment(image, boxes=BOXES, strategy="all")
    assert [r.prompt_index for r in every] == [0, 1, 2]
    largest = small_segmentor.segment(image, boxes=BOXES, strategy="largest")
    assert len(largest) == 1 and largest[0].area == max(r.area for r in every)
    merged = small_segmentor.segment(image, boxes=BOXES, strategy="merge")
    union = np.logical_or.reduce([r.mask for r in every])
    assert len(merged) == 1 and merged[0].prompt_index == -1
    assert np.array_equal(merged[0].mask, union) and merged[0].area == int(union.sum())
    assert merged[0].score == max(r.score for r in every)
    with pytest.raises(InvalidInputError, match="strategy"):
        small_segmentor.segment(image, boxes=BOXES, strategy="first")  # type: ignore[arg-type]


def test_output_formats_decode_to_the_mask(small_segmentor: Segmentor, photos: dict[str, np.ndarray]) -> None:
    from perceptra_seg.utils.masks import polygons_to_mask

    image = photos["chelsea"]
    result = small_segmentor.segment_from_box(image, box=BOXES[0], output_formats=["numpy", "rle", "png", "polygons"])
    mask = result.mask
    assert mask is not None and mask.dtype == bool and mask.shape == image.shape[:2]
    assert result.rle is not None and np.array_equal(mask_utils.decode(result.rle).astype(bool), mask)
    assert result.png_bytes is not None
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.png_bytes))) > 0, mask)
    assert result.polygons is not None
    raster = polygons_to_mask(result.polygons, *mask.shape)
    assert np.logical_and(raster, mask).sum() / max(np.logical_or(raster, mask).sum(), 1) >= 0.98
    ys, xs = np.nonzero(mask)
    assert result.area == mask.sum() and result.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    only_rle = small_segmentor.segment_from_box(image, box=BOXES[0], output_formats=["rle"])
    assert only_rle.mask is None and only_rle.png_bytes is None and only_rle.polygons is None
    with pytest.raises(InvalidInputError, match="unknown output format"):
        small_segmentor.segment_from_box(image, box=BOXES[0], output_formats=["jpeg"])


def test_outputs_config_options(counting_segmentor: Any, photos: dict[str, np.ndarray]) -> None:
    seg = counting_segmentor(outputs={"formats": ["rle", "png"], "rle_compressed": False, "png_bit_depth": 8})
    result = seg.segment_from_box(photos["coffee"], box=BOXES[1])
    assert (
        isinstance(result.rle["counts"], list)
        and sum(result.rle["counts"]) == result.rle["size"][0] * result.rle["size"][1]
    )
    assert Image.open(io.BytesIO(result.png_bytes)).mode == "L"
    decoded = mask_utils.decode(mask_utils.frPyObjects(result.rle, *result.rle["size"]))
    assert decoded.sum() == result.area


def test_mask_input_refinement_matches_reference(
    small_segmentor: Segmentor, small_sam1: tuple[torch.nn.Module, Path], photos: dict[str, np.ndarray]
) -> None:
    image = photos["coffee"]
    first = small_segmentor.segment_from_points(image, points=[(200, 150, 1)])
    refined = small_segmentor.segment_from_points(
        image, points=[(200, 150, 1), (260, 200, 0)], mask_input=first.low_res_logits
    )
    predictor = segment_anything.SamPredictor(small_sam1[0])
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[200, 150], [260, 200]]),
        point_labels=np.array([1, 0]),
        mask_input=first.low_res_logits[None],
        multimask_output=False,
    )
    iou = np.logical_and(masks[0], refined.mask).sum() / max(np.logical_or(masks[0], refined.mask).sum(), 1)
    assert iou >= 0.99 and abs(float(scores[0]) - refined.score) <= 1e-3


def test_embed_then_segment_by_handle(counting_segmentor: Any, photos: dict[str, np.ndarray]) -> None:
    seg = counting_segmentor()
    image = photos["chelsea"]
    handle = seg.embed(image)
    assert isinstance(handle, EmbeddedImage) and (handle.height, handle.width) == image.shape[:2]
    by_handle = seg.segment_from_box(handle, box=BOXES[0])
    direct = seg.segment_from_box(image, box=BOXES[0])
    assert np.array_equal(by_handle.mask, direct.mask) and seg.backend.encode_calls == 1
    with pytest.raises(InvalidInputError, match="return_overlay"):
        seg.segment_from_box(handle, box=BOXES[0], return_overlay=True)
    with pytest.raises(InvalidInputError, match="outside"):
        seg.segment_from_points(handle, points=[(image.shape[1] + 5, 10, 1)])
    seg.close()
    with pytest.raises(NotFoundError, match="embed the image again"):
        seg.segment_from_box(handle, box=BOXES[0])
    with pytest.raises(ConfigError, match="cache"):
        counting_segmentor(cache={"enabled": False}).embed(image)


def test_image_sources_give_identical_masks(
    small_segmentor: Segmentor, photos: dict[str, np.ndarray], tmp_path: Path
) -> None:
    image = photos["chelsea"]
    path = tmp_path / "chelsea.png"
    Image.fromarray(image).save(path)
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    expected = small_segmentor.segment_from_box(image, box=BOXES[0]).mask
    for source in (str(path), path, path.read_bytes(), Image.fromarray(image), rgba):
        assert np.array_equal(small_segmentor.segment_from_box(source, box=BOXES[0]).mask, expected)


def test_bad_images_are_clear_errors(counting_segmentor: Any) -> None:
    seg = counting_segmentor(input={"max_pixels": 100 * 100})
    with pytest.raises(ImageTooLargeError):
        seg.segment_from_box(np.zeros((101, 100, 3), np.uint8), box=(1, 1, 5, 5))
    with pytest.raises(InvalidInputError):
        seg.segment_from_box(np.zeros((10, 10, 2), np.uint8), box=(1, 1, 5, 5))
    with pytest.raises(InvalidInputError):
        seg.segment_from_box(b"not an image", box=(1, 1, 5, 5))
    assert seg.backend.encode_calls == 0


def test_postprocess_threshold_holes_and_islands(counting_segmentor: Any, photos: dict[str, np.ndarray]) -> None:
    import cv2

    image = photos["coffee"]
    plain = counting_segmentor().segment_from_box(image, box=BOXES[1])
    stricter = counting_segmentor(postprocess={"mask_threshold": 2.0}).segment_from_box(image, box=BOXES[1])
    assert stricter.area < plain.area and not np.any(stricter.mask & ~plain.mask)
    cleaned = counting_segmentor(postprocess={"min_island_area": 500, "min_hole_area": 500}).segment_from_box(
        image, box=BOXES[1]
    )
    _, _, stats, _ = cv2.connectedComponentsWithStats(cleaned.mask.astype(np.uint8), connectivity=8)
    assert (stats[1:, cv2.CC_STAT_AREA] >= 500).all()
    _, _, holes, _ = cv2.connectedComponentsWithStats((~cleaned.mask).astype(np.uint8), connectivity=8)
    assert np.count_nonzero(holes[1:, cv2.CC_STAT_AREA] < 500) <= np.count_nonzero(
        cv2.connectedComponentsWithStats((~plain.mask).astype(np.uint8), connectivity=8)[2][1:, cv2.CC_STAT_AREA] < 500
    )


def test_overlay_is_a_png_of_the_image(small_segmentor: Segmentor, photos: dict[str, np.ndarray]) -> None:
    image = photos["chelsea"]
    result = small_segmentor.segment_from_box(image, box=BOXES[0], return_overlay=True)
    assert result.overlay_png is not None
    overlay = np.asarray(Image.open(io.BytesIO(result.overlay_png)).convert("RGB"))
    assert overlay.shape == image.shape
    assert np.any(overlay[result.mask] != image[result.mask])


def test_multimask_single_call_returns_best(small_segmentor: Segmentor, photos: dict[str, np.ndarray]) -> None:
    image = photos["coffee"]
    three = small_segmentor.segment(image, points=[(200, 150, 1)], multimask=True)
    best = small_segmentor.segment_from_points(image, points=[(200, 150, 1)], multimask=True)
    assert len(three) == 3 and best.score == max(r.score for r in three)


def test_bf16_autocast_agrees_with_fp32(small_sam1_config: dict[str, Any], photos: dict[str, np.ndarray]) -> None:
    image = photos["coffee"]
    fp32 = Segmentor(small_sam1_config)
    bf16 = Segmentor({**small_sam1_config, "runtime": {"device": "cpu", "precision": "bf16", "num_threads": 2}})
    assert torch.get_num_threads() == 2
    a = fp32.backend.encode(image).features[0]
    b = bf16.backend.encode(image).features[0]
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.1)  # autocast really ran in bf16
    for box in BOXES:
        m32 = fp32.segment_from_box(image, box=box).mask
        m16 = bf16.segment_from_box(image, box=box).mask
        assert np.logical_and(m32, m16).sum() / max(np.logical_or(m32, m16).sum(), 1) >= 0.9
    assert bf16.segment_from_box(image, box=BOXES[0]).model_info["precision"] == "bf16"


def test_lifecycle_warmup_set_backend_close(small_sam1_config: dict[str, Any], photos: dict[str, np.ndarray]) -> None:
    with Segmentor(small_sam1_config) as seg:
        assert seg.warmup((64, 96)) > 0 and seg.cache_stats().entries == 0
        seg.segment_from_box(photos["coffee"], box=BOXES[0])
        old_backend = seg.backend
        seg.set_backend("torch")
        assert seg.backend is not old_backend and seg.cache_stats().entries == 0
        with pytest.raises(ConfigError):
            seg.set_backend("tensorflow")


def test_compile_wraps_the_encoder(
    small_sam1_config: dict[str, Any], photos: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """runtime.compile routes encoding through torch.compile (the eager backend here keeps the test fast; the
    inductor speed-up is measured in bench/, not in tests)."""
    compiled: list[Any] = []
    real_compile = torch.compile

    def recording_compile(fn: Any, **kwargs: Any) -> Any:
        compiled.append(fn)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", recording_compile)
    eager = Segmentor(small_sam1_config)
    seg = Segmentor({**small_sam1_config, "runtime": {"device": "cpu", "compile": True}})
    assert len(compiled) == 1 and compiled[0].__name__ == "get_image_embeddings"
    image = photos["coffee"]
    assert np.array_equal(
        seg.segment_from_box(image, box=BOXES[0]).mask, eager.segment_from_box(image, box=BOXES[0]).mask
    )


def test_several_prompts_with_mask_inputs_equal_separate_calls(
    small_segmentor: Segmentor, photos: dict[str, np.ndarray]
) -> None:
    image = photos["coffee"]
    first = small_segmentor.segment(image, boxes=BOXES[:2])
    prompts = [{"box": box, "mask_input": r.low_res_logits} for box, r in zip(BOXES[:2], first, strict=True)]
    together = small_segmentor.segment(image, prompts=prompts)
    for prompt, result in zip(prompts, together, strict=True):
        alone = small_segmentor.segment(image, prompts=[prompt])[0]
        assert np.array_equal(alone.mask, result.mask) and abs(alone.score - result.score) < 1e-5
