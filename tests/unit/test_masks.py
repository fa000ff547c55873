"""Mask converters: round trips against pycocotools / Pillow / OpenCV, measures, cleanup, format selection."""

from __future__ import annotations

import dataclasses
import io

import cv2
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils
from shapely.geometry import Polygon

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult
from perceptra_seg.utils.masks import (
    OUTPUT_FORMATS,
    bbox_xyxy_to_xywh,
    encode_mask,
    mask_area,
    mask_bbox,
    mask_to_png,
    mask_to_polygons,
    mask_to_rle,
    png_to_mask,
    polygons_to_coco,
    polygons_to_mask,
    remove_small_regions,
    rle_to_mask,
    validate_formats,
)

# pycocotools' own decode() trips a numpy 2 deprecation warning inside the library; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ring_signed_area(ring: list[list[float]]) -> float:
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _edge_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    single = np.zeros((5, 7), bool)
    single[2, 3] = True
    corner = np.zeros((4, 4), bool)
    corner[0, 0] = corner[3, 3] = True
    diagonal = np.eye(6, dtype=bool)
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    pinched = np.zeros((5, 5), bool)  # a C whose ends touch diagonally around a one-pixel hole
    pinched[1, 1:4] = pinched[1:4, 1] = pinched[3, 1:3] = pinched[2, 3] = True
    wide = rng.random((9, 40)) < 0.5
    tall = rng.random((40, 9)) < 0.5
    return [
        ("empty", np.zeros((4, 6), bool)),
        ("full", np.ones((4, 6), bool)),
        ("single_pixel", single),
        ("one_by_one_on", np.ones((1, 1), bool)),
        ("one_by_one_off", np.zeros((1, 1), bool)),
        ("row_1xN", rng.random((1, 17)) < 0.5),
        ("col_Nx1", rng.random((17, 1)) < 0.5),
        ("odd_37x53", rng.random((37, 53)) < 0.4),
        ("diagonal_touching", diagonal),
        ("corner_pixels", corner),
        ("ring_with_hole", ring),
        ("pinched_hole", pinched),
        ("strided_view", wide[:, ::2]),
        ("transposed_view", tall.T),
        ("uint8_values", (rng.random((8, 8)) < 0.5).astype(np.uint8) * 7),
        ("float_values", (rng.random((8, 8)) < 0.5).astype(np.float32)),
    ]


EDGE_CASES = _edge_cases()
EDGE_IDS = [name for name, _ in EDGE_CASES]

noise_masks = hnp.arrays(
    dtype=np.bool_,
    shape=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    elements=st.booleans(),
)


@st.composite
def blob_masks(draw: st.DrawFn) -> np.ndarray:
    """Unions of filled rectangles and ellipses, with rectangular and elliptic holes cut out."""
    height = draw(st.integers(24, 96))
    width = draw(st.integers(24, 96))
    canvas = np.zeros((height, width), np.uint8)

    def shape(value: int) -> None:
        cx = draw(st.integers(0, width - 1))
        cy = draw(st.integers(0, height - 1))
        rx = draw(st.integers(3, max(3, width // 3)))
        ry = draw(st.integers(3, max(3, height // 3)))
        if draw(st.booleans()):
            cv2.rectangle(canvas, (cx - rx, cy - ry), (cx + rx, cy + ry), value, -1)
        else:
            angle = float(draw(st.integers(0, 179)))
            cv2.ellipse(canvas, (cx, cy), (rx, ry), angle, 0, 360, value, -1)

    for _ in range(draw(st.integers(1, 4))):
        shape(1)
    for _ in range(draw(st.integers(0, 2))):
        shape(0)
    return canvas.astype(bool)


# ----------------------------------------------------------------------------------------------------- RLE


def _check_rle_round_trip(mask: np.ndarray) -> None:
    m = np.asarray(mask) != 0
    h, w = m.shape
    compressed = mask_to_rle(mask)
    assert compressed["size"] == [h, w]
    assert isinstance(compressed["counts"], str)
    reference = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    assert compressed["counts"] == reference["counts"].decode()
    decoded = mask_utils.decode({"size": [h, w], "counts": compressed["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), m)

    plain = mask_to_rle(mask, compressed=False)
    assert plain["size"] == [h, w]
    assert all(type(c) is int for c in plain["counts"])
    assert sum(plain["counts"]) == h * w
    via_coco = mask_utils.decode(mask_utils.frPyObjects(plain, h, w))
    np.testing.assert_array_equal(via_coco.astype(bool), m)

    for rle in (compressed, plain):
        back = rle_to_mask(rle)
        assert back.dtype == np.bool_ and back.shape == (h, w)
        np.testing.assert_array_equal(back, m)


@pytest.mark.parametrize("mask", [m for _, m in EDGE_CASES], ids=EDGE_IDS)
def test_rle_round_trip_edge_cases(mask: np.ndarray) -> None:
    _check_rle_round_trip(mask)


def _views(mask: np.ndarray) -> list[np.ndarray]:
    """The mask plus non-contiguous views of it (transposed, strided, reversed)."""
    views = [mask, mask.T, mask[:, ::-1]]
    if mask.shape[1] > 1:
        views.append(mask[:, ::2])
    return views


@FAST
@given(noise_masks)
def test_rle_round_trip_random(mask: np.ndarray) -> None:
    for view in _views(mask):
        _check_rle_round_trip(view)


def test_uncompressed_rle_starts_with_background_run() -> None:
    mask = np.array([[1, 0], [1, 1]], bool)  # column-major: 1, 1, 0, 1
    assert mask_to_rle(mask, compressed=False)["counts"] == [0, 2, 1, 1]
    assert mask_to_rle(np.zeros((2, 3)), compressed=False)["counts"] == [6]


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [2, 2], "counts": [1, 2]},  # sums to 3, not 4
        {"size": [2, 2], "counts": [2, -1, 3]},
        {"size": [2, 2], "counts": "!!"},
        {"size": [4, 4], "counts": "0`"},  # continuation bit on the last character
        {"size": [2], "counts": [4]},
        {"size": [0, 3], "counts": []},
        {"size": [2, 2], "counts": 4},
        {"counts": [4]},
    ],
)
def test_rle_to_mask_rejects_malformed(rle: dict) -> None:
    with pytest.raises(InvalidInputError):
        rle_to_mask(rle)


# ----------------------------------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("bit_depth,mode", [(1, "1"), (8, "L")])
@pytest.mark.parametrize("mask", [m for _, m in EDGE_CASES], ids=EDGE_IDS)
def test_png_round_trip_edge_cases(mask: np.ndarray, bit_depth: int, mode: str) -> None:
    data = mask_to_png(mask, bit_depth=bit_depth)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.mode == mode
        assert img.size == (mask.shape[1], mask.shape[0])
        if mode == "L":
            assert set(np.unique(np.asarray(img)).tolist()) <= {0, 255}
    np.testing.assert_array_equal(png_to_mask(data), np.asarray(mask) != 0)


@FAST
@given(noise_masks, st.sampled_from([1, 8]))
def test_png_round_trip_random(mask: np.ndarray, bit_depth: int) -> None:
    for view in _views(mask):
        np.testing.assert_array_equal(png_to_mask(mask_to_png(view, bit_depth=bit_depth)), view)


def test_png_bad_bit_depth_and_bad_data() -> None:
    with pytest.raises(InvalidInputError, match="bit_depth"):
        mask_to_png(np.ones((2, 2)), bit_depth=4)
    with pytest.raises(InvalidInputError):
        png_to_mask(b"not a png")


# ------------------------------------------------------------------------------------------------- polygons


def _check_polygon_structure(polygons: list, mask: np.ndarray) -> None:
    for polygon in polygons:
        exterior, *holes = polygon
        assert len(exterior) >= 3
        assert _ring_signed_area(exterior) > 0
        for hole in holes:
            assert _ring_signed_area(hole) < 0
        shape = Polygon(exterior, holes)
        assert shape.is_valid
    total = sum(Polygon(p[0], p[1:]).area for p in polygons)
    assert total == pytest.approx(float(np.count_nonzero(mask)))


@pytest.mark.parametrize("mask", [m for _, m in EDGE_CASES], ids=EDGE_IDS)
def test_polygons_exact_edge_cases(mask: np.ndarray) -> None:
    polygons = mask_to_polygons(mask)
    _check_polygon_structure(polygons, np.asarray(mask) != 0)
    np.testing.assert_array_equal(polygons_to_mask(polygons, *mask.shape), np.asarray(mask) != 0)


@FAST
@given(blob_masks())
def test_polygons_round_trip_blobs(mask: np.ndarray) -> None:
    polygons = mask_to_polygons(mask)
    back = polygons_to_mask(polygons, *mask.shape)
    assert _iou(back, mask) >= 0.98
    np.testing.assert_array_equal(back, mask)  # pixel-corner rings make it exact
    _check_polygon_structure(polygons, mask)


@FAST
@given(noise_masks)
def test_polygons_noise_masks_rasterise_exactly_and_are_valid(mask: np.ndarray) -> None:
    for view in _views(mask):
        polygons = mask_to_polygons(view)
        _check_polygon_structure(polygons, view)
        np.testing.assert_array_equal(polygons_to_mask(polygons, *view.shape), view)


@FAST
@given(blob_masks(), st.sampled_from([0.5, 1.0, 2.0]))
def test_polygon_simplification_keeps_shape(mask: np.ndarray, tolerance: float) -> None:
    exact = mask_to_polygons(mask)
    simple = mask_to_polygons(mask, tolerance=tolerance)
    assert sum(len(r) for p in simple for r in p) <= sum(len(r) for p in exact for r in p)
    for polygon in simple:
        assert Polygon(polygon[0], polygon[1:]).is_valid
    if mask.sum() >= 400:
        assert _iou(polygons_to_mask(simple, *mask.shape), mask) >= 0.85


def test_polygon_rings_follow_pixel_corners() -> None:
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    (polygon,) = mask_to_polygons(mask)
    assert sorted(map(tuple, polygon[0])) == [(2.0, 1.0), (2.0, 3.0), (5.0, 1.0), (5.0, 3.0)]


def test_polygon_holes_islands_and_min_area() -> None:
    mask = np.zeros((20, 20), bool)
    mask[2:18, 2:18] = True
    mask[5:15, 5:15] = False  # 100-pixel hole
    mask[9:11, 9:11] = True  # 4-pixel island inside the hole
    mask[3, 3] = False  # 1-pixel hole
    polygons = mask_to_polygons(mask)
    assert sorted(len(p) for p in polygons) == [1, 3]
    np.testing.assert_array_equal(polygons_to_mask(polygons, 20, 20), mask)

    filtered = mask_to_polygons(mask, min_area=5)
    assert [len(p) for p in filtered] == [2]  # island gone, small hole filled, big hole kept
    expected = mask.copy()
    expected[9:11, 9:11] = False
    expected[3, 3] = True
    np.testing.assert_array_equal(polygons_to_mask(filtered, 20, 20), expected)
    assert mask_to_polygons(mask, min_area=10_000) == []


def test_polygons_match_pycocotools_rasterisation() -> None:
    mask = np.zeros((40, 50), np.uint8)
    cv2.ellipse(mask, (20, 18), (14, 9), 30.0, 0, 360, 1, -1)
    cv2.rectangle(mask, (35, 25), (46, 37), 1, -1)
    coco = polygons_to_coco(mask_to_polygons(mask))
    assert all(len(ring) % 2 == 0 and len(ring) >= 6 for ring in coco)
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(coco, 40, 50)))
    np.testing.assert_array_equal(decoded, mask)


def test_diagonal_contacts_give_valid_polygons_per_4_connected_part() -> None:
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[1, 1] = True  # one 8-connected region, two 4-connected parts
    polygons = mask_to_polygons(mask)
    assert sorted(sorted(map(tuple, p[0])) for p in polygons) == [
        [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)],
        [(1.0, 1.0), (1.0, 2.0), (2.0, 1.0), (2.0, 2.0)],
    ]


def test_polygons_to_coco_drops_holes() -> None:
    mask = np.ones((6, 6), bool)
    mask[2:4, 2:4] = False
    coco = polygons_to_coco(mask_to_polygons(mask))
    assert len(coco) == 1 and len(coco[0]) == 8


# --------------------------------------------------------------------------------------------- area / bbox


@pytest.mark.parametrize("mask", [m for _, m in EDGE_CASES], ids=EDGE_IDS)
def test_area_and_bbox_edge_cases(mask: np.ndarray) -> None:
    _check_area_bbox(mask)


@FAST
@given(noise_masks)
def test_area_and_bbox_random(mask: np.ndarray) -> None:
    for view in _views(mask):
        _check_area_bbox(view)


def _check_area_bbox(mask: np.ndarray) -> None:
    m = np.asarray(mask) != 0
    assert mask_area(mask) == int(m.sum())
    ys, xs = np.nonzero(m)
    expected = (0, 0, 0, 0) if ys.size == 0 else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    bbox = mask_bbox(mask)
    assert bbox == tuple(int(v) for v in expected)
    assert all(type(v) is int for v in bbox)


@pytest.mark.parametrize(
    "xyxy,xywh",
    [
        ((0, 0, 0, 0), [0.0, 0.0, 0.0, 0.0]),
        ((2, 3, 7, 11), [2.0, 3.0, 5.0, 8.0]),
        ((1.5, 2, 3, 4.5), [1.5, 2, 1.5, 2.5]),
    ],
)
def test_bbox_xyxy_to_xywh(xyxy: tuple, xywh: list) -> None:
    assert bbox_xyxy_to_xywh(xyxy) == xywh
    assert all(type(v) is float for v in bbox_xyxy_to_xywh(xyxy))


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 2)), np.zeros(5), np.zeros((0, 4)), 3])
def test_bad_masks_rejected(bad: object) -> None:
    for fn in (mask_area, mask_bbox, mask_to_rle, mask_to_png, mask_to_polygons):
        with pytest.raises(InvalidInputError):
            fn(bad)


# ------------------------------------------------------------------------------------------------- cleanup


def _cleanup_case() -> np.ndarray:
    mask = np.zeros((30, 30), bool)
    mask[5:25, 5:25] = True
    mask[8:10, 8:10] = False  # hole of 4
    mask[12:20, 12:20] = False  # hole of 64
    mask[0, 28:30] = True  # island of 2 at the border
    mask[27, 2] = mask[28, 3] = True  # island of 2, diagonal (one 8-connected component)
    return mask


@pytest.mark.parametrize(
    "mode,min_area,changed",
    [
        ("holes", 0, []),
        ("holes", 5, [(slice(8, 10), slice(8, 10), True)]),
        ("holes", 100, [(slice(8, 10), slice(8, 10), True), (slice(12, 20), slice(12, 20), True)]),
        ("islands", 0, []),
        ("islands", 2, []),
        ("islands", 3, [(slice(0, 1), slice(28, 30), False), (slice(27, 29), slice(2, 4), False)]),
    ],
)
def test_remove_small_regions(mode: str, min_area: int, changed: list) -> None:
    mask = _cleanup_case()
    expected = mask.copy()
    for rows, cols, value in changed:
        if value:
            expected[rows, cols] = True
        else:
            expected[rows, cols] &= False
    result = remove_small_regions(mask, min_area=min_area, mode=mode)  # type: ignore[arg-type]
    assert result.dtype == np.bool_
    np.testing.assert_array_equal(result, expected)


def test_remove_small_regions_border_background_is_not_a_hole_and_all_small_islands_go() -> None:
    mask = np.ones((6, 6), bool)
    mask[0, 0] = False  # touches the border: not a hole
    np.testing.assert_array_equal(remove_small_regions(mask, min_area=10, mode="holes"), mask)
    specks = np.zeros((6, 6), bool)
    specks[1, 1] = specks[4, 4] = True
    assert not remove_small_regions(specks, min_area=2, mode="islands").any()
    with pytest.raises(InvalidInputError):
        remove_small_regions(specks, min_area=2, mode="blobs")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- formats


def test_validate_formats() -> None:
    assert validate_formats(["RLE", "png", "rle", " numpy "]) == ("rle", "png", "numpy")
    assert validate_formats("polygons") == ("polygons",)
    assert validate_formats([]) == ()
    with pytest.raises(InvalidInputError, match="numpy, rle, png, polygons"):
        validate_formats(["rle", "jpeg"])
    with pytest.raises(InvalidInputError):
        validate_formats([1])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="must be a list of names"):
        validate_formats(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="must be a list of names"):
        validate_formats({"rle": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "formats,keys",
    [
        (["numpy"], {"mask"}),
        (["rle"], {"rle"}),
        (["png"], {"png_bytes"}),
        (["polygons"], {"polygons"}),
        (list(OUTPUT_FORMATS), {"mask", "rle", "png_bytes", "polygons"}),
        ([], set()),
    ],
)
def test_encode_mask_computes_only_requested(formats: list[str], keys: set[str]) -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[2:6, 3:9] = 3
    out = encode_mask(mask[:, :], formats)
    assert set(out) == keys
    result_fields = {f.name for f in dataclasses.fields(SegmentationResult)}
    assert keys <= result_fields
    SegmentationResult(score=1.0, area=24, bbox=(3, 2, 9, 6), **out)
    if "mask" in out:
        assert out["mask"].dtype == np.bool_ and out["mask"].flags.c_contiguous
        assert out["mask"].sum() == 24
    if "rle" in out:
        assert rle_to_mask(out["rle"]).sum() == 24
    if "png_bytes" in out:
        assert png_to_mask(out["png_bytes"]).sum() == 24
    if "polygons" in out:
        assert polygons_to_mask(out["polygons"], 10, 12).sum() == 24


def test_encode_mask_options_are_passed_through() -> None:
    mask = np.zeros((30, 30), bool)
    cv2.circle(mask.view(np.uint8), (15, 15), 10, 1, -1)
    mask[0, 0] = True
    out = encode_mask(
        mask,
        ["rle", "png", "polygons"],
        rle_compressed=False,
        png_bit_depth=8,
        polygon_tolerance=1.0,
        polygon_min_area=2.0,
    )
    assert isinstance(out["rle"]["counts"], list)
    with Image.open(io.BytesIO(out["png_bytes"])) as img:
        assert img.mode == "L"
    assert len(out["polygons"]) == 1  # the lone pixel is below min_area
    with pytest.raises(InvalidInputError, match="valid formats"):
        encode_mask(mask, ["numpy", "svg"])


def _full_image_cleanup(mask: np.ndarray, min_area: int, mode: str) -> np.ndarray:
    """Label the whole image (the definition the bounding-box shortcut must reproduce)."""
    work = ~mask if mode == "holes" else mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(work.astype(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_area
    small[0] = False
    if mode == "holes":
        small[np.unique(np.concatenate((labels[0], labels[-1], labels[:, 0], labels[:, -1])))] = False
        return mask | small[labels]
    return mask & ~small[labels]


@settings(max_examples=60, deadline=None)
@given(
    mask=hnp.arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24))),
    pad=st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)),
    min_area=st.integers(1, 12),
    mode=st.sampled_from(["holes", "islands"]),
)
def test_cleanup_on_the_bounding_box_equals_whole_image(
    mask: np.ndarray, pad: tuple[int, int, int, int], min_area: int, mode: str
) -> None:
    padded = np.pad(mask, ((pad[0], pad[1]), (pad[2], pad[3])))  # masks touching and not touching the border
    expected = _full_image_cleanup(padded, min_area, mode)
    np.testing.assert_array_equal(remove_small_regions(padded, min_area=min_area, mode=mode), expected)  # type: ignore[arg-type]
