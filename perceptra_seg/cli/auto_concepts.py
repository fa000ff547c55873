"""``segment-auto --text``: every instance of each phrase (SAM 3) written as ``segment-auto``'s records.

Each image runs one :class:`~perceptra_seg.concepts.ConceptRequest` with every phrase (one image encoding, one
detector pass per phrase). The phrases are the categories: ids ``1..N`` in the order given, each record's
``category_id`` the id of its phrase and ``score`` the instance's score. A COCO results list cannot hold category
names, so they go beside it: ``<out stem>.categories.json`` (``everything.json`` → ``everything.categories.json``;
for ``yolo-seg``, ``DIR/categories.json``, and ``data.yaml``'s ``names`` are the phrases), holding
``{"categories": [{"id": 1, "name": "car"}, ...]}`` — the ``categories`` of a COCO dataset. A re-run resumes only
with the same phrases in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perceptra_seg.concepts import ConceptRequest, TextPromptsUnsupportedError
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult
from perceptra_seg.utils.masks import OutputFormat

from .common import read_json, write_atomic

__all__ = ["categories_path", "check_categories", "concept_categories", "concept_image", "write_categories"]


def concept_categories(
    model: str, texts: list[str] | None, threshold: float | None, options: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """The COCO categories of a ``--text`` run (``[{"id": 1, "name": phrase}, ...]`` in the order given), or
    ``None`` for segmenting everything; everything is checked before a model loads.

    Raises:
        TextPromptsUnsupportedError: ``--text`` with a model other than ``sam3``.
        InvalidInputError: ``sam3`` without ``--text`` (it has no segment-everything generator); generator flags
            with ``--text`` or ``--threshold`` without it; an empty, over-long or repeated phrase, too many phrases,
            a threshold outside [0, 1).
    """
    if not texts:
        if threshold is not None:
            raise InvalidInputError("--threshold applies to --text only")
        if model == "sam3":
            raise InvalidInputError(
                "SAM 3 has no segment-everything generator: give --text PHRASE (repeatable) to segment every "
                "instance of each phrase"
            )
        return None
    if model != "sam3":
        raise TextPromptsUnsupportedError(
            f"model {model!r} has no text prompts; segment-auto --text needs --model sam3"
        )
    if options:
        flags = ", ".join("--" + name.replace("_", "-") for name in options)
        raise InvalidInputError(f"{flags} apply to segmenting everything, not to --text")
    ConceptRequest(None, tuple(texts), None, 0.5 if threshold is None else threshold)  # the phrases and threshold
    repeated = sorted({text for text in texts if texts.count(text) > 1})
    if repeated:
        raise InvalidInputError(f"each --text names one category; repeated: {repeated}")
    return [{"id": index, "name": text} for index, text in enumerate(texts, start=1)]


def categories_path(out: Path, fmt: str) -> Path:
    """Where a ``--text`` run keeps its categories: ``DIR/categories.json`` for ``yolo-seg``, else
    ``<out stem>.categories.json`` beside the results file."""
    return out / "categories.json" if fmt == "yolo-seg" else out.with_name(out.stem + ".categories.json")


def check_categories(out: Path, fmt: str, categories: list[dict[str, Any]] | None) -> Path:
    """Check that ``out`` may take this run's records (before anything is written there); returns where a
    ``--text`` run keeps its categories (:func:`categories_path`).

    Raises:
        InvalidInputError: ``out`` holds another run's records: other phrases, or records written without
            ``--text`` (or, without ``--text``, records written with it).
    """
    path = categories_path(out, fmt)
    existing = out / "index.json" if fmt == "yolo-seg" else out
    if categories is None:
        if path.exists():
            raise InvalidInputError(f"{out} holds --text results (see {path}); choose another --out")
        return path
    if path.exists():
        data = read_json(path, "existing categories file")
        found = data.get("categories") if isinstance(data, dict) else None
        if found != categories:
            names = [c.get("name") for c in found] if isinstance(found, list) else found
            raise InvalidInputError(
                f"{out} holds results for the phrases {names}, not {[c['name'] for c in categories]}; "
                "give the same --text values in the same order, or choose another --out"
            )
    elif existing.exists():
        raise InvalidInputError(f"{out} holds results written without --text; choose another --out")
    return path


def write_categories(path: Path, categories: list[dict[str, Any]]) -> None:
    """Write ``{"categories": categories}`` to ``path`` (atomically) unless it is there already."""
    if not path.exists():
        write_atomic(path, json.dumps({"categories": categories}, indent=1) + "\n")


def concept_image(
    seg: Any, image: Any, texts: list[str], threshold: float | None, formats: tuple[OutputFormat, ...]
) -> list[SegmentationResult]:
    """Every instance of every phrase on one image (``image``: what the input policy accepts, e.g. an RGB ``uint8``
    ``[H, W, 3]`` array), ordered by phrase then descending score; ``prompt_index`` is the phrase's index."""
    request = ConceptRequest(image, tuple(texts), None, 0.5 if threshold is None else threshold, formats)
    return list(seg.run(request))
