"""The SDK's seam (issue 16): typed requests run by ``Segmentor.run``, one decode per image, per-call metadata and
stage timings on the result set, one JSON shape, and an input policy that can refuse server paths."""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from perceptra_seg import Segmentor
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.inputs import InputPolicy
from perceptra_seg.models import EmbeddedImage
from perceptra_seg.requests import EmbedRequest, SegmentRequest
from perceptra_seg.results import CallInfo, EmbedResult, ResultSet, mask_document
from perceptra_seg.utils.masks import png_to_mask, rle_to_mask

from ..conftest import BoxOracleBackend

BOX = (8.0, 6.0, 40.0, 30.0)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture
def segmentor() -> Iterator[Segmentor]:
    with Segmentor({"model": {"name": "sam_v2"}}, backend=BoxOracleBackend()) as seg:
        yield seg


@pytest.mark.parametrize("kind", ["array", "png-bytes", "base64", "path", "pil"])
def test_every_sdk_call_decodes_its_image_once(
    segmentor: Segmentor, image: np.ndarray, decodes: Counter[str], tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(_png(image))
    source: Any = {
        "array": image,
        "png-bytes": _png(image),
        "base64": base64.b64encode(_png(image)).decode(),
        "path": str(path),
        "pil": Image.fromarray(image),
    }[kind]
    segmentor.segment_from_box(source, BOX, output_formats=["rle"])
    assert sum(decodes.values()) == 1
    segmentor.segment(source, boxes=[BOX, (1, 1, 20, 20)], strategy="merge", return_overlay=True)
    assert sum(decodes.values()) == 2
    segmentor.embed(source)
    assert sum(decodes.values()) == 3


def test_run_returns_results_with_the_calls_metadata(segmentor: Segmentor, image: np.ndarray) -> None:
    request = SegmentRequest(
        image, ({"box": BOX},), boxes=[(1, 1, 20, 20)], output_formats=("rle",), request_id="a" * 32
    )
    first = segmentor.run(request)
    assert isinstance(first, ResultSet) and isinstance(first.info, CallInfo)
    assert [r.prompt_index for r in first] == [0, 1] and first.image_size == (48, 64)
    assert first.info.request_id == "a" * 32 and {r.request_id for r in first} == {"a" * 32}
    assert {r.latency_ms for r in first} == {first.info.latency_ms} and first.info.latency_ms > 0
    assert first.info.model_info == segmentor.backend.info() == first[0].model_info
    assert set(first.info.stages_s) == {"decode_image", "encode", "decode_masks", "outputs"}
    assert not first.info.cache_hit
    assert sum(first.info.stages_s.values()) <= first.info.latency_ms / 1000.0 + 1e-6
    again = segmentor.run(SegmentRequest(image, ({"box": BOX},)))
    assert again.info.cache_hit and "encode" not in again.info.stages_s  # the cached embedding
    assert again.info.request_id != first.info.request_id and len(again.info.request_id) == 32
    np.testing.assert_array_equal(rle_to_mask(first[0].rle), again[0].mask)


def test_embed_request_and_handle(segmentor: Segmentor, image: np.ndarray) -> None:
    embedded = segmentor.run(EmbedRequest(image))
    assert isinstance(embedded, EmbedResult) and isinstance(embedded.handle, EmbeddedImage)
    assert (embedded.handle.height, embedded.handle.width) == (48, 64)
    assert set(embedded.info.stages_s) == {"decode_image", "encode"}
    by_handle = segmentor.run(SegmentRequest(embedded.handle, ({"box": BOX},)))
    assert by_handle.info.cache_hit and "decode_image" not in by_handle.info.stages_s
    np.testing.assert_array_equal(by_handle[0].mask, segmentor.segment_from_box(image, BOX).mask)


def test_requests_are_checked_once_when_made(image: np.ndarray) -> None:
    request = SegmentRequest.build(image, [{"box": BOX}], output_formats=[" RLE", "png", "rle"])
    assert request.output_formats == ("rle", "png")
    assert SegmentRequest.build(image, output_formats="polygons").output_formats == ("polygons",)
    with pytest.raises(InvalidInputError, match="valid formats"):
        SegmentRequest.build(image, output_formats=["svg"])
    with pytest.raises(InvalidInputError, match="strategy must be one of all, best, largest, merge"):
        SegmentRequest(image, strategy="smallest")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="return_overlay"):
        SegmentRequest(EmbeddedImage("x", 4, 4), return_overlay=True)


def test_an_unknown_request_type_is_refused(segmentor: Segmentor) -> None:
    with pytest.raises(InvalidInputError, match="does not know requests of type str"):
        segmentor.run("segment this")  # type: ignore[call-overload]


def test_best_is_the_highest_score_of_all(small_segmentor: Segmentor, photos: dict[str, np.ndarray]) -> None:
    photo = photos["coffee"]
    everything = small_segmentor.segment(photo, points=[(40, 30, 1)], multimask=True, output_formats=["numpy"])
    best = small_segmentor.segment(
        photo, points=[(40, 30, 1)], multimask=True, strategy="best", output_formats=["numpy"]
    )
    want = max(everything, key=lambda r: r.score)
    assert len(everything) == 3 and len(best) == 1
    assert best[0].score == want.score and np.array_equal(best[0].mask, want.mask)
    assert small_segmentor.segment_from_points(photo, [(40, 30, 1)], multimask=True).score == want.score


def test_a_policy_without_paths_never_opens_a_file(image: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(_png(image))
    config: dict[str, Any] = {"model": {"name": "sam_v2"}}
    with Segmentor(config, backend=BoxOracleBackend()) as seg:
        policy = InputPolicy.from_config(seg.config.input, allow_paths=False)
    with Segmentor(config, backend=BoxOracleBackend(), input_policy=policy) as guarded:
        with pytest.raises(InvalidInputError, match="invalid base64"):
            guarded.segment_from_box(str(path), BOX)
        with pytest.raises(InvalidInputError, match="local image paths are not accepted"):
            guarded.segment_from_box(path, BOX)
        text = base64.b64encode(_png(image)).decode()
        assert guarded.segment_from_box(text, BOX, output_formats=["numpy"]).mask is not None


def test_one_json_shape_for_every_front_end(segmentor: Segmentor, image: np.ndarray) -> None:
    results = segmentor.segment(image, boxes=[BOX, (1, 1, 20, 20)], output_formats=["rle", "png", "numpy"])
    body = results.to_dict()
    assert set(body) == {"request_id", "latency_ms", "model_info", "results"}
    assert body["request_id"] == results.info.request_id
    first = body["results"][0]
    summary = {"prompt_index", "score", "area", "bbox", "stability_score"}
    assert set(first) == summary | {"rle", "png_base64"}  # numpy stays home
    png_mask = png_to_mask(base64.b64decode(first["png_base64"]))
    np.testing.assert_array_equal(png_mask, results[0].mask)
    np.testing.assert_array_equal(rle_to_mask(first["rle"]), results[0].mask)
    assert first["area"] == int(results[0].mask.sum())
    only_rle = results.to_dict(encodings=("rle",))["results"][1]
    assert set(only_rle) == summary | {"rle"}
    single = results[:1]
    assert set(mask_document(single[0])) == set(first)
    flat = ResultSet(single, results.info, results.image_size).to_dict(single=True)
    assert flat["rle"] == first["rle"] and "results" not in flat
