"""batch --format: coco-rle (default) / coco-polygons checked with pycocotools' COCO.loadRes, yolo-seg loaded with
supervision's YOLO reader; every format keeps the source annotation id."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from scipy import ndimage

from perceptra_seg.utils.polygons import mask_to_polygons, polygons_to_mask

from .conftest import Run

BOXES = {"coffee.png": [[20, 10, 70, 60], [0, 0, 60, 50]], "chelsea.png": [[5, 5, 75, 50]]}
IDS = {"coffee.png": [101, 102], "chelsea.png": [103]}
CATEGORIES = {"coffee.png": [3, 5], "chelsea.png": [3]}


@pytest.fixture
def dataset(tmp_path: Path, images: dict[str, Path]) -> tuple[Path, Path]:
    """A flat image folder (as YOLO readers expect) and its COCO annotations file with annotation ids."""
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(images["coffee"], folder / "coffee.png")
    Image.open(images["chelsea"]).convert("RGB").save(folder / "chelsea.png")
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 3}, {"id": 5}]}
    for image_id, name in enumerate(sorted(BOXES), start=1):
        width, height = Image.open(folder / name).size
        coco["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
        for box, ann_id, category in zip(BOXES[name], IDS[name], CATEGORIES[name], strict=True):
            coco["annotations"].append(
                {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": box, "area": 1, "iscrowd": 0}
            )
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return folder, path


def expected_masks(segmentor: Any, folder: Path) -> dict[int, np.ndarray]:
    """annotation id → the SDK's mask for that annotation's box."""
    out = {}
    for name, boxes in BOXES.items():
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in boxes]
        results = segmentor.segment(folder / name, boxes=xyxy, output_formats=["numpy"])
        for ann_id, result in zip(IDS[name], results, strict=True):
            out[ann_id] = result.mask
    return out


def largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part of the mask with its holes filled (what one YOLO-seg line holds)."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]
    return np.asarray(ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes))), dtype=bool)


@pytest.mark.parametrize("fmt", ["coco-rle", "coco-polygons"])
def test_coco_formats_load_with_pycocotools(
    cli: Callable[..., Run],
    config_file: Path,
    dataset: tuple[Path, Path],
    small_segmentor: Any,
    tmp_path: Path,
    fmt: str,
) -> None:
    folder, annotations = dataset
    out = tmp_path / "results.json"
    args: list[str | Path] = ["batch", "-c", config_file, "--images", folder, "--prompts", annotations, "--out", out]
    run = cli(*args, *([] if fmt == "coco-rle" else ["--format", fmt]), "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["results_written"] == 3
    records = json.loads(out.read_text())
    assert sorted(r["annotation_id"] for r in records) == [101, 102, 103]
    ground_truth = COCO(str(annotations))
    loaded = ground_truth.loadRes(str(out))
    want = expected_masks(small_segmentor, folder)
    for ann in loaded.loadAnns(loaded.getAnnIds()):
        mask = loaded.annToMask(ann).astype(bool)
        reference = want[ann["annotation_id"]]
        if fmt == "coco-rle":
            assert isinstance(ann["segmentation"], dict)
            np.testing.assert_array_equal(mask, reference)
        else:  # exterior rings along pixel edges: exact, except that COCO polygons cannot hold holes
            assert isinstance(ann["segmentation"], list)
            filled = polygons_to_mask([[p[0]] for p in mask_to_polygons(reference)], *reference.shape)
            np.testing.assert_array_equal(mask, filled)
            written = next(r for r in records if r["annotation_id"] == ann["annotation_id"])
            assert written["area"] == int(filled.sum())  # loadRes recomputes "area" from the bbox for polygons
        ys, xs = np.nonzero(mask)
        assert next(r for r in records if r["annotation_id"] == ann["annotation_id"])["bbox"] == [
            xs.min(),
            ys.min(),
            xs.max() + 1 - xs.min(),
            ys.max() + 1 - ys.min(),
        ]


def test_yolo_seg_loads_with_supervision(
    cli: Callable[..., Run], config_file: Path, dataset: tuple[Path, Path], small_segmentor: Any, tmp_path: Path
) -> None:
    sv = pytest.importorskip("supervision")
    folder, annotations = dataset
    out = tmp_path / "yolo"
    args = ["batch", "-c", config_file, "--images", folder, "--prompts", annotations, "--out", out]
    run = cli(*args, "--format", "yolo-seg", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["results_written"] == 3
    index = json.loads((out / "index.json").read_text())
    assert index["category_ids"] == [3, 5]
    lines = {item["image"]: item["lines"] for item in index["images"]}
    assert [line["annotation_id"] for line in lines["coffee.png"]] == [101, 102]
    assert [line["category_id"] for line in lines["coffee.png"]] == [3, 5]
    dataset_sv = sv.DetectionDataset.from_yolo(
        images_directory_path=str(folder),
        annotations_directory_path=str(out / "labels"),
        data_yaml_path=str(out / "data.yaml"),
        force_masks=True,
    )
    assert dataset_sv.classes == ["3", "5"]
    want = expected_masks(small_segmentor, folder)
    for path, _, detections in dataset_sv:
        name = Path(path).name
        assert detections.class_id.tolist() == [[3, 5].index(c) for c in CATEGORIES[name]]
        for mask, line in zip(detections.mask, lines[name], strict=True):
            reference = largest_part(want[line["annotation_id"]])
            # supervision re-rasterises the normalised outline (cv2.fillPoly): the part, up to rounding
            iou = (mask & reference).sum() / (mask | reference).sum()
            assert iou > 0.98, (name, iou)

    again = cli(*args, "--format", "yolo-seg", "--json")  # resumed: nothing left to do
    assert again.exit_code == 0 and again.json()["skipped_existing"] == 2 and again.json()["processed"] == 0
    wrong = cli(*args[:-1], tmp_path / "labels.json", "--format", "yolo-seg")
    assert wrong.exit_code == 2 and "writes a directory" in wrong.stderr


def test_prompts_mapping_carries_annotation_ids(
    cli: Callable[..., Run], config_file: Path, dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = dataset
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps({"coffee.png": [{"box": [20, 10, 90, 70], "annotation_id": 77}, {"box": [1, 1, 30, 30]}]})
    )
    out = tmp_path / "results.json"
    run = cli(
        "batch", "-c", config_file, "--images", folder, "--prompts", prompts, "--out", out, "--format", "coco-polygons"
    )
    assert run.exit_code == 0, run.stderr
    records = json.loads(out.read_text())
    assert [r.get("annotation_id") for r in records] == [77, None]  # no source id: none invented
    prompts.write_text(json.dumps({"coffee.png": [{"box": [20, 10, 90, 70], "annotation_id": "x"}]}))
    bad = cli("batch", "-c", config_file, "--images", folder, "--prompts", prompts, "--out", tmp_path / "b.json")
    assert bad.exit_code == 2 and "annotation_id must be integers" in bad.stderr
    unknown = cli("batch", "-c", config_file, "--images", folder, "--prompts", prompts, "--out", out, "--format", "voc")
    assert unknown.exit_code == 2
