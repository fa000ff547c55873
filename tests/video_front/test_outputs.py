"""Video output writers on real masks: YouTube-VIS JSON (decoded with pycocotools), palette PNGs, overlay mp4."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult
from perceptra_seg.utils.masks import encode_mask, mask_area, mask_bbox
from perceptra_seg.video.outputs import YouTubeVisWriter, frame_document
from perceptra_seg.video.overlay import OverlayVideoWriter, blend_objects, object_color
from perceptra_seg.video.palette import PaletteMaskWriter, davis_palette, frame_label_map

HEIGHT, WIDTH = 36, 50


def disc(cx: float, cy: float, r: float, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    yy, xx = np.mgrid[: size[0], : size[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def result(mask: np.ndarray, score: float, formats: tuple[str, ...] = ("rle",)) -> SegmentationResult:
    encoded = encode_mask(mask, formats)  # type: ignore[arg-type]
    return SegmentationResult(score=score, area=mask_area(mask), bbox=mask_bbox(mask), **encoded)


def clip(frames: int = 6) -> list[dict[int, tuple[np.ndarray, float]]]:
    """Two moving discs; object 7 vanishes on frame 3 (empty mask)."""
    out = []
    for t in range(frames):
        one = disc(8 + 3 * t, 12, 6)
        seven = disc(40 - 2 * t, 24, 7) if t != 3 else np.zeros((HEIGHT, WIDTH), bool)
        out.append({1: (one, 0.5 + 0.05 * t), 7: (seven, 0.9)})
    return out


def test_frame_document_lists_objects_by_id() -> None:
    mask = disc(10, 10, 4)
    doc = frame_document(4, {9: result(mask, 0.7), 2: result(mask, 0.6)})
    assert doc["frame"] == 4
    assert [o["obj_id"] for o in doc["objects"]] == [2, 9]
    decoded = coco_mask.decode({**doc["objects"][0]["rle"], "counts": doc["objects"][0]["rle"]["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), mask)
    assert doc["objects"][0]["bbox"] == list(mask_bbox(mask)) and "prompt_index" not in doc["objects"][0]


@pytest.mark.parametrize("reverse", [False, True])
def test_youtube_vis_rle_decodes_to_the_masks(tmp_path: Path, reverse: bool) -> None:
    frames = clip()
    order = list(range(len(frames)))[::-1] if reverse else list(range(len(frames)))
    tracked = order[:5]  # frame 5 (forward) / 0 (reverse) is not tracked -> null
    out = tmp_path / "results.json"
    with YouTubeVisWriter(out, num_frames=len(frames), video_id=12, category_id=3) as writer:
        for t in tracked:
            writer.add(t, {obj: result(m, s) for obj, (m, s) in frames[t].items()})
    assert not list(tmp_path.glob(".*"))  # no spool left behind
    data = json.loads(out.read_text())
    assert [entry["obj_id"] for entry in data] == [1, 7]
    for entry in data:
        assert entry["video_id"] == 12 and entry["category_id"] == 3
        segs = entry["segmentations"]
        assert len(segs) == len(frames)
        scores = []
        for t, seg in enumerate(segs):
            mask, score = frames[t][entry["obj_id"]]
            if t not in tracked or not mask.any():
                assert seg is None
                continue
            assert isinstance(seg["counts"], str) and seg["size"] == [HEIGHT, WIDTH]
            decoded = coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), mask)
            scores.append(score)
        assert entry["score"] == pytest.approx(float(np.mean(scores)))


def test_youtube_vis_refuses_bad_frames(tmp_path: Path) -> None:
    writer = YouTubeVisWriter(tmp_path / "r.json", num_frames=2)
    mask = disc(5, 5, 3)
    with pytest.raises(InvalidInputError, match="outside"):
        writer.add(2, {1: result(mask, 0.5)})
    writer.add(0, {1: result(mask, 0.5)})
    with pytest.raises(InvalidInputError, match="twice"):
        writer.add(0, {1: result(mask, 0.5)})
    with pytest.raises(InvalidInputError, match="rle"):
        writer.add(1, {1: result(mask, 0.5, ("numpy",))})
    writer.discard()
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.iterdir())


def test_palette_pngs_hold_object_ids(tmp_path: Path) -> None:
    frames = clip(4)
    writer = PaletteMaskWriter(tmp_path / "masks" / "video", size=(HEIGHT, WIDTH))
    for t in (3, 2, 1):
        writer.add(t, {obj: result(m, s) for obj, (m, s) in frames[t].items()})
    files = sorted(p.name for p in (tmp_path / "masks" / "video").iterdir())
    assert files == ["00001.png", "00002.png", "00003.png"]
    for t in (1, 2, 3):
        picture = Image.open(tmp_path / "masks" / "video" / f"{t:05d}.png")
        assert picture.mode == "P" and picture.size == (WIDTH, HEIGHT)
        assert picture.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
        labels = np.array(picture)
        one, seven = frames[t][1][0], frames[t][7][0]
        assert np.array_equal(labels == 1, one)  # object 1 wins where they overlap
        assert np.array_equal(labels == 7, seven & ~one)
        assert np.array_equal(labels == 0, ~(one | seven))


def test_palette_overlap_and_id_limits() -> None:
    a, b = disc(20, 18, 9), disc(26, 18, 9)
    assert (a & b).any()
    labels = frame_label_map({200: result(b, 0.1), 3: result(a, 0.9)}, (HEIGHT, WIDTH))
    assert np.array_equal(labels == 3, a) and np.array_equal(labels == 200, b & ~a)
    for bad in (0, 256, -1):
        with pytest.raises(InvalidInputError, match="1..255"):
            frame_label_map({bad: result(a, 0.5)}, (HEIGHT, WIDTH))
    with pytest.raises(InvalidInputError, match="shape"):
        frame_label_map({1: result(disc(3, 3, 2, (10, 10)), 0.5)}, (HEIGHT, WIDTH))


def test_davis_palette_first_entries() -> None:
    palette = davis_palette()
    assert len(palette) == 768
    assert [tuple(palette[3 * i : 3 * i + 3]) for i in range(9)] == [
        (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128),
        (128, 0, 128), (0, 128, 128), (128, 128, 128), (64, 0, 0),
    ]  # fmt: skip


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("size", [(48, 64), (47, 63)])
def test_overlay_video_frames_and_colours(tmp_path: Path, size: tuple[int, int]) -> None:
    height, width = size
    gray = np.full((height, width, 3), 100, dtype=np.uint8)
    masks = []
    out = tmp_path / "overlay.mp4"
    with OverlayVideoWriter(out, size=size, fps=12.5) as writer:
        for t in range(5):
            one = disc(14 + 2 * t, 16, 10, size)
            two = disc(46, 30, 12, size) & ~one
            masks.append((one, two))
            writer.add(gray, {1: result(one, 0.5, ("numpy",)), 2: result(two, 0.5)})
    frames = _decode(out)
    assert len(frames) == 5
    with av.open(str(out)) as container:
        assert float(container.streams.video[0].average_rate) == pytest.approx(12.5)
    for frame, (one, two) in zip(frames, masks, strict=True):
        assert frame.shape == (height + height % 2, width + width % 2, 3)
        frame = frame[:height, :width].astype(np.float64)
        for mask, obj in ((one, 1), (two, 2)):
            inner = disc(*_centre(mask), 4, size) & mask
            expected = 0.5 * 100 + 0.5 * np.array(object_color(obj))
            assert np.abs(frame[inner].mean(axis=0) - expected).max() < 12
        background = ~(one | two)
        assert np.abs(frame[background].mean(axis=0) - 100).max() < 8


def _centre(mask: np.ndarray) -> tuple[float, float]:
    yy, xx = np.nonzero(mask)
    return float(xx.mean()), float(yy.mean())


def test_overlay_discarded_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "overlay.mp4"
    frame = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="shape"), OverlayVideoWriter(out, size=(20, 20)) as writer:
        writer.add(frame, {1: result(disc(5, 5, 3), 0.5)})
    assert not out.exists() and not list(tmp_path.iterdir())


def test_blend_objects_exact_colours() -> None:
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    mask = disc(10, 10, 5)
    out = blend_objects(frame, {300: result(mask, 0.5, ("numpy",)), 1: result(mask, 0.5)})
    assert tuple(out[10, 10]) == (64, 0, 0)  # object 1 (palette 128, 0, 0) over object 300
    assert not out[~mask].any()


def test_overlay_default_frame_rate(tmp_path: Path) -> None:
    out = tmp_path / "overlay.mp4"
    with OverlayVideoWriter(out, size=(16, 16), fps=None) as writer:
        writer.add(np.zeros((16, 16, 3), np.uint8), {})
    with av.open(str(out)) as container:
        assert float(container.streams.video[0].average_rate) == pytest.approx(30.0)
