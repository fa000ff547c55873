"""Output formats of ``batch --format``: where results go, what a re-run skips, and how a mask is written.

==================  ===========================================================================================
``coco-rle``        (default) ``--out results.json``: a COCO results list, ``segmentation`` = compressed RLE
``coco-polygons``   ``--out results.json``: the same list, ``segmentation`` = COCO polygons ``[[x1, y1, ...]]``
                    (exterior rings along pixel edges; COCO polygons cannot hold holes, so holes are filled)
``yolo-seg``        ``--out DIR``: ``DIR/labels/<image path without suffix>.txt`` with one line per mask
                    ``<class> x1 y1 x2 y2 ...`` (the outline of the mask's largest 8-connected part, holes
                    filled, on pixel centres as OpenCV traces it, divided by the image width / height; empty
                    masks get no line), ``DIR/data.yaml`` (``names``: class index → COCO
                    ``category_id``) and ``DIR/index.json`` (per image: ``image_id``, label file, and the source
                    annotation id and ``category_id`` of each line)
==================  ===========================================================================================

Every format keeps the source annotation id (a COCO annotations file's ``annotations[].id``, or a prompt's
``annotation_id`` in a prompts mapping): ``annotation_id`` in the COCO records, ``index.json`` for YOLO. Every
write is atomic (temporary file + rename) and happens after each image, so an interrupted run loses nothing; a
re-run skips the images already written (by ``image_id``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult
from perceptra_seg.utils.coco import to_coco_results
from perceptra_seg.utils.masks import rle_to_mask
from perceptra_seg.utils.polygons import mask_to_polygons, polygons_to_coco

from .common import read_json, require_output_dirs, require_suffix, write_atomic

__all__ = ["BATCH_FORMATS", "BatchFormat", "CocoWriter", "YoloWriter", "coco_records", "open_writer"]

BatchFormat = Literal["coco-rle", "coco-polygons", "yolo-seg"]
BATCH_FORMATS: tuple[BatchFormat, ...] = ("coco-rle", "coco-polygons", "yolo-seg")


def _mask(result: SegmentationResult) -> np.ndarray:
    if result.mask is not None:
        return np.asarray(result.mask, dtype=bool)
    if result.rle is not None:
        return rle_to_mask(result.rle)
    raise InvalidInputError("a result needs the 'rle' or 'numpy' format")


class CocoWriter:
    """``coco-rle`` / ``coco-polygons``: one COCO results list in ``out`` (a ``.json`` file), continuing the
    records ``existing`` already in it."""

    def __init__(self, out: Path, existing: list[dict[str, Any]], *, polygons: bool) -> None:
        require_suffix(out, (".json",), "--out")
        require_output_dirs(out)
        self.out = out
        self.polygons = polygons
        self.done_ids = {int(item["image_id"]) for item in existing}
        self._entries = [json.dumps(item) for item in existing]
        self.written = 0

    def add(
        self,
        image_id: int,
        name: str,
        results: list[SegmentationResult],
        categories: list[int],
        annotation_ids: list[int | None],
    ) -> None:
        """Append the records of one image (``results[i].prompt_index`` indexes ``categories`` and
        ``annotation_ids``) and rewrite ``out``."""
        records = coco_records(image_id, results, categories, annotation_ids, polygons=self.polygons)
        self._entries.extend(json.dumps(item) for item in records)
        self.written += len(records)
        write_atomic(self.out, "[\n" + ",\n".join(self._entries) + "\n]\n")

    def finish(self) -> None:
        """Write an empty list when nothing was ever written (so ``out`` always exists after a run)."""
        if not self._entries and not self.out.exists():
            write_atomic(self.out, "[]\n")


def coco_records(
    image_id: int,
    results: list[SegmentationResult],
    categories: list[int],
    annotation_ids: list[int | None],
    *,
    polygons: bool = False,
) -> list[dict[str, Any]]:
    """The COCO result records of one image, in ``results`` order (``results[i].prompt_index`` indexes
    ``categories`` and ``annotation_ids``; a source annotation id is kept as ``annotation_id``). Both batch engines
    build their records here."""
    records = []
    for result in results:
        record = to_coco_results([result], image_id=image_id, category_id=categories[result.prompt_index])[0]
        source = annotation_ids[result.prompt_index]
        if source is not None:
            record["annotation_id"] = source
        if polygons:
            record.update(_coco_polygons(_mask(result)))
        records.append(record)
    return records


def _coco_polygons(mask: np.ndarray) -> dict[str, Any]:
    """``segmentation`` as COCO polygons, with ``bbox`` / ``area`` of what those polygons cover."""
    polygons = polygons_to_coco(mask_to_polygons(mask))
    height, width = mask.shape
    if not polygons:
        return {"segmentation": [], "bbox": [0.0, 0.0, 0.0, 0.0], "area": 0}
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {
        "segmentation": polygons,
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "area": int(mask_utils.area(rle)),
    }


class YoloWriter:
    """``yolo-seg``: label files, ``data.yaml`` and ``index.json`` under the directory ``out``.

    Args:
        out: the output directory (created when missing; its parent must exist).
        category_ids: every ``category_id`` of the run; class ``i`` is the ``i``-th smallest (stable across
            re-runs of the same prompts). A re-run whose classes differ from ``data.yaml``'s is refused.
        names: a name per ``category_id`` for ``data.yaml``'s ``names`` (``segment-auto --text``: the phrases);
            without it, the class names are the category ids.
    """

    def __init__(self, out: Path, category_ids: list[int], names: dict[int, str] | None = None) -> None:
        if out.suffix.lower() == ".json":
            raise InvalidInputError(f"--format yolo-seg writes a directory; --out {out} looks like a JSON file")
        require_output_dirs(out)
        self.out = out
        self.classes = sorted(set(category_ids))
        self._class_of = {category: index for index, category in enumerate(self.classes)}
        self._index_path = out / "index.json"
        self._index: list[dict[str, Any]] = []
        if self._index_path.exists():
            data = read_json(self._index_path, "existing YOLO index")
            if not isinstance(data, dict) or not isinstance(data.get("images"), list):
                raise InvalidInputError(f"{self._index_path} is not a batch YOLO index; choose another --out")
            if data.get("category_ids") != self.classes:
                raise InvalidInputError(
                    f"{out} holds labels for category ids {data.get('category_ids')}, these prompts have "
                    f"{self.classes}; choose another --out"
                )
            self._index = data["images"]
        self.done_ids = {int(item["image_id"]) for item in self._index}
        self.written = 0
        (out / "labels").mkdir(parents=True, exist_ok=True)
        if names is None:
            listed = "".join(f"  {index}: '{category}'\n" for index, category in enumerate(self.classes))
            meaning = "class name = COCO category_id"
        else:  # a JSON string is a YAML double-quoted scalar, whatever the phrase holds
            listed = "".join(f"  {index}: {json.dumps(names[c])}\n" for index, c in enumerate(self.classes))
            meaning = "class i = COCO category_id i + 1"
        write_atomic(
            out / "data.yaml",
            f"# written by segmentor-cli batch --format yolo-seg; {meaning}\n"
            f"path: .\nnc: {len(self.classes)}\nnames:\n{listed}",
        )

    def add(
        self,
        image_id: int,
        name: str,
        results: list[SegmentationResult],
        categories: list[int],
        annotation_ids: list[int | None],
    ) -> None:
        """Write the label file of one image and update ``index.json``."""
        label = PurePosixPath("labels") / PurePosixPath(name).with_suffix(".txt")
        lines, sources = [], []
        for result in results:
            mask = _mask(result)
            outline = _largest_outline(mask)
            if outline is None:
                continue  # an empty mask has no polygon
            height, width = mask.shape
            coords = " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in outline.tolist())
            category = categories[result.prompt_index]
            lines.append(f"{self._class_of[category]} {coords}")
            sources.append({"annotation_id": annotation_ids[result.prompt_index], "category_id": category})
        path = self.out / label
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, "".join(line + "\n" for line in lines))
        self._index.append({"image": name, "image_id": image_id, "labels": str(label), "lines": sources})
        self.written += len(lines)
        body = {"category_ids": self.classes, "images": self._index}
        write_atomic(self._index_path, json.dumps(body, indent=1) + "\n")

    def finish(self) -> None:
        """Nothing left to write (every image was written when it finished)."""


def _largest_outline(mask: np.ndarray) -> np.ndarray | None:
    """The outline ``[K, 2]`` (``x, y`` pixel indices, K >= 3) of the largest 8-connected part of ``mask`` (holes
    ignored), or ``None`` when it is empty.

    This is OpenCV's contour convention (vertices on the boundary pixels' centres), the one YOLO tools use: filling
    the polygon with ``cv2.fillPoly`` (as supervision and Ultralytics do when they read labels) gives the part back.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    part = (labels == biggest).astype(np.uint8)
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=len).reshape(-1, 2)
    while len(outline) < 3:  # a one- or two-pixel part: repeat vertices so every reader accepts the line
        outline = np.concatenate([outline, outline[-1:]])
    return outline


def open_writer(
    fmt: str,
    out: Path,
    category_ids: list[int],
    read_existing: Callable[[Path], list[dict[str, Any]]],
    names: dict[int, str] | None = None,
) -> CocoWriter | YoloWriter:
    """The writer of ``--format fmt`` (``read_existing(out)``: the COCO records a COCO ``out`` already holds;
    ``names``: YOLO class names per category id, see :class:`YoloWriter`)."""
    if fmt == "yolo-seg":
        return YoloWriter(out, category_ids, names)
    if fmt in ("coco-rle", "coco-polygons"):
        require_suffix(out, (".json",), "--out")
        return CocoWriter(out, read_existing(out), polygons=fmt == "coco-polygons")
    raise InvalidInputError(f"--format must be one of {', '.join(BATCH_FORMATS)}; got {fmt!r}")
