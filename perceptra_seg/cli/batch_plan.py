"""Batch planning: which images ``segmentor-cli batch`` segments, with which prompts, under which COCO image ids.

Shared by both batch engines (the local loop in :mod:`.batch` and :mod:`perceptra_seg.distributed`). Input formats are
described in :mod:`.batch`'s docstring.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perceptra_seg.exceptions import InvalidInputError

from .common import read_json

__all__ = ["IMAGE_SUFFIXES", "ImageJob", "list_images", "plan_jobs", "stable_image_id"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class ImageJob:
    """One image to segment.

    Attributes:
        path: the image file (a local path, or an fsspec URL string for the Ray engine).
        name: the image's name as matched (relative path or list entry, POSIX separators).
        image_id: COCO image id of its results.
        prompts: prompt dicts for :meth:`~perceptra_seg.Segmentor.segment` (boxes XYXY in pixels).
        categories: ``category_id`` of each prompt.
        annotation_ids: the source annotation id of each prompt (``None`` when the input had none).
        auto: generator options when the job is automatic masks (``prompts`` is then empty; every mask gets the
            ``category_id`` :data:`~.batch_auto.AUTO_CATEGORY`, no source annotation id), else ``None``.
        concepts: ``{"texts": [phrase, ...], "threshold": T or None}`` when the job is every instance of each phrase
            (SAM 3, ``batch --auto --text``; ``prompts`` empty, ``auto`` ``None``; phrase ``k`` is
            ``category_id`` ``k + 1``, :func:`~.auto_concepts.concept_job`), else ``None``.
    """

    path: Path | str
    name: str
    image_id: int
    prompts: list[dict[str, Any]] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    annotation_ids: list[int | None] = field(default_factory=list)
    auto: dict[str, Any] | None = None
    concepts: dict[str, Any] | None = None


@dataclass
class _Entry:
    image_id: int
    prompts: list[dict[str, Any]]
    categories: list[int]
    annotation_ids: list[int | None] = field(default_factory=list)


def plan_jobs(
    images: Any,
    prompts: Path | None,
    *,
    lister: Callable[[Any], list[tuple[str, Any]]] | None = None,
    auto: dict[str, Any] | None = None,
    concepts: dict[str, Any] | None = None,
) -> tuple[list[ImageJob], list[str], list[str]]:
    """Match images with prompt entries, or (``prompts`` ``None``, ``auto`` the generator options) make every image
    a job of automatic masks, its id derived from its name (:func:`stable_image_id`, as ``segment-auto`` does); with
    ``concepts`` (``{"texts": [...], "threshold": T or None}``, ``prompts`` ``None``) a job of every instance of each
    phrase instead, under the same ids.

    ``lister(images)`` gives the ``(name, location)`` of every image (default :func:`list_images` over a local
    directory or list file; the Ray engine passes an fsspec lister, whose locations are URL strings).

    Returns:
        ``(jobs, images_without_prompts, entries_without_image)``; jobs are in image-name order and include only
        images with at least one prompt.

    Raises:
        InvalidInputError: unreadable inputs, a malformed prompts file, or two entries with the same image id.
    """
    if prompts is None:
        if auto is None and concepts is None:
            raise InvalidInputError("a batch needs prompts, automatic-mask options or phrases")
        listing = (lister or list_images)(images)
        if concepts is not None:
            spec = {"texts": list(concepts["texts"]), "threshold": concepts["threshold"]}
            return [ImageJob(path, name, stable_image_id(name), concepts=spec) for name, path in listing], [], []
        return [ImageJob(path, name, stable_image_id(name), auto=dict(auto or {})) for name, path in listing], [], []
    table = _load_entries(prompts)
    by_basename: dict[str, list[str]] = defaultdict(list)
    for name in table:
        by_basename[Path(name).name].append(name)
    jobs: list[ImageJob] = []
    unmatched_images: list[str] = []
    used: set[str] = set()
    for name, path in (lister or list_images)(images):
        key = name if name in table else None
        candidates = by_basename.get(Path(name).name, [])
        if key is None and len(candidates) == 1:
            key = candidates[0]
        if key is None or not table[key].prompts:
            unmatched_images.append(name)
            continue
        used.add(key)
        entry = table[key]
        jobs.append(ImageJob(path, name, entry.image_id, entry.prompts, entry.categories, entry.annotation_ids))
    unmatched_entries = sorted(set(table) - used)
    return jobs, unmatched_images, unmatched_entries


def list_images(source: Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of every image in a directory (recursive) or list file, sorted by name."""
    if source.is_dir():
        found = [p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        return sorted((p.relative_to(source).as_posix(), p) for p in found)
    if source.is_file():
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read image list {source}: {exc}") from None
        items = []
        for line in lines:
            text = line.strip()
            if text and not text.startswith("#"):
                path = Path(text).expanduser()
                items.append((Path(text).as_posix(), path if path.is_absolute() else source.parent / path))
        return sorted(items)
    raise InvalidInputError(f"--images {source} is neither a directory nor a file listing images")


def stable_image_id(name: str) -> int:
    """Image id of a prompts-mapping entry: the first 31 bits of the SHA-256 of its name (positive int32)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


def _load_entries(path: Path) -> dict[str, _Entry]:
    data = read_json(path, "prompts file")
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return _coco_entries(data, path)
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        return _mapping_entries(data, path)
    raise InvalidInputError(
        f"prompts file {path} must be a COCO annotations file (with 'images' and 'annotations') or a JSON object "
        "mapping image file names to lists of prompts"
    )


def _coco_entries(data: dict[str, Any], path: Path) -> dict[str, _Entry]:
    images, annotations = data["images"], data["annotations"]
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise InvalidInputError(f"COCO file {path}: 'images' and 'annotations' must be lists")
    table: dict[str, _Entry] = {}
    by_id: dict[int, _Entry] = {}
    for index, image in enumerate(images):
        try:
            image_id, name = int(image["id"]), str(image["file_name"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(
                f"COCO file {path}: images[{index}] needs an integer 'id' and a 'file_name'"
            ) from None
        table[name] = by_id[image_id] = _Entry(image_id, [], [])
    for index, ann in enumerate(annotations):
        try:
            entry = by_id[int(ann["image_id"])]
            prompt = _coco_prompt(ann)
            category = int(ann.get("category_id", 1))
            source = None if ann.get("id") is None else int(ann["id"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(
                f"COCO file {path}: annotations[{index}] needs an 'image_id' listed in 'images' and a 'bbox' "
                "[x, y, width, height] and/or 'point_coords' [[x, y], ...]"
            ) from None
        entry.prompts.append(prompt)
        entry.categories.append(category)
        entry.annotation_ids.append(source)
    return table


def _coco_prompt(ann: dict[str, Any]) -> dict[str, Any]:
    """The prompt of one COCO annotation: its ``bbox`` ``[x, y, w, h]`` as the box ``[x, y, x + w, y + h]`` and its
    ``point_coords`` ``[[x, y], ...]`` (SA-1B's field) as foreground clicks; at least one of the two.

    Raises:
        KeyError, TypeError, ValueError: neither field, or a malformed one.
    """
    prompt: dict[str, Any] = {}
    if ann.get("bbox") is not None:
        x, y, w, h = (float(v) for v in ann["bbox"])
        prompt["box"] = [x, y, x + w, y + h]
    if ann.get("point_coords"):
        prompt["points"] = [[float(px), float(py), 1] for px, py in ann["point_coords"]]
    if not prompt:
        raise KeyError("bbox")
    return prompt


def _mapping_entries(data: dict[str, list[Any]], path: Path) -> dict[str, _Entry]:
    table: dict[str, _Entry] = {}
    seen: dict[int, str] = {}
    for name, items in data.items():
        image_id = stable_image_id(name)
        if image_id in seen:
            raise InvalidInputError(f"prompts file {path}: {name!r} and {seen[image_id]!r} map to the same image id")
        seen[image_id] = name
        entry = _Entry(image_id, [], [])
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise InvalidInputError(f"prompts file {path}: {name}[{index}] must be a prompt object")
            prompt = dict(item)
            try:
                category = int(prompt.pop("category_id", 1))
                source = prompt.pop("annotation_id", None)
                source = None if source is None else int(source)
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"prompts file {path}: {name}[{index}].category_id and annotation_id must be integers"
                ) from None
            entry.prompts.append(prompt)
            entry.categories.append(category)
            entry.annotation_ids.append(source)
        table[name] = entry
    return table
