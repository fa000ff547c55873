"""``segment-text``: every instance of a concept on one image (model ``sam3``): phrases and/or exemplar boxes.

Exemplar boxes are ``X1 Y1 X2 Y2`` in pixels of the original image (``--exemplar`` positive, ``--negative``
negative). The image is decoded and the prompts are checked before the model is loaded. The results file has the
shape of ``segment``'s plus each result's ``label`` (its phrase).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from perceptra_seg.concepts import ConceptRequest, TextPromptsUnsupportedError
from perceptra_seg.concepts.request import check_exemplars_inside
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.inputs import InputPolicy
from perceptra_seg.results import ResultSet

from .common import CommonOptions, command, emit_json, require_output_dirs, require_suffix, write_atomic

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``segment-text`` to ``app``."""
    command(app, "segment-text")(segment_text)


def _boxes(values: list[str] | None, label: int, flag: str) -> list[dict[str, Any]]:
    boxes = []
    for value in values or []:
        try:
            numbers = [float(v) for v in value.replace(",", " ").split()]
        except ValueError:
            raise InvalidInputError(f"{flag} needs four numbers 'X1 Y1 X2 Y2', got {value!r}") from None
        if len(numbers) != 4:
            raise InvalidInputError(f"{flag} needs four numbers 'X1 Y1 X2 Y2', got {value!r}")
        boxes.append({"box": numbers, "label": label})
    return boxes


def segment_text(
    opts: CommonOptions,
    image: Annotated[Path, typer.Option("--image", "-i", help="Image file (JPEG, PNG, WEBP, BMP, TIFF).")],
    text: Annotated[
        list[str] | None, typer.Option("--text", "-t", help="A noun phrase ('red car'); repeatable, one pass each.")
    ] = None,
    exemplar: Annotated[
        list[str] | None,
        typer.Option("--exemplar", metavar="'X1 Y1 X2 Y2'", help="A positive exemplar box in pixels; repeatable."),
    ] = None,
    negative: Annotated[
        list[str] | None,
        typer.Option("--negative", metavar="'X1 Y1 X2 Y2'", help="A negative exemplar box in pixels; repeatable."),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", min=0.0, max=1.0, help="Keep instances scoring above this.")
    ] = 0.5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results JSON file (RLE and polygons).")] = None,
) -> None:
    """Segment every instance of a phrase (SAM 3): one result per instance, labelled with its phrase.

    The results file holds {"image", "height", "width", "model", "request_id", "latency_ms", "results":
    [{prompt_index, label, score, area, bbox, rle, polygons}, ...]}; needs model sam3 (--model sam3).
    """
    if not image.is_file():
        raise InvalidInputError(f"image file not found: {str(image)!r}")
    require_suffix(out, (".json",), "--out")
    require_output_dirs(out)
    exemplars = _boxes(exemplar, 1, "--exemplar") + _boxes(negative, 0, "--negative")
    phrases = tuple(text or ())
    checked = ConceptRequest(image, phrases, exemplars, threshold, ("rle", "polygons"))  # phrases, boxes, threshold
    config = opts.load_config()
    model = config.model.name
    if model != "sam3":  # refused before another model is loaded (or downloaded) only to say so
        raise TextPromptsUnsupportedError(f"model {model!r} has no text prompts; segment-text needs --model sam3")
    # the image is decoded (and the exemplars checked against it) before the model loads, so a bad file costs nothing
    pixels = InputPolicy.from_config(config.input).load(image)
    check_exemplars_inside(checked.exemplars, pixels.shape[1], pixels.shape[0])
    request = ConceptRequest(pixels, phrases, exemplars, threshold, ("rle", "polygons"))
    with opts.segmentor() as seg:
        results = seg.run(request)
    if out is not None:
        write_atomic(out, json.dumps(_document(image, results, ("rle", "polygons"))) + "\n")
    if opts.json:
        emit_json({**_document(image, results, ("rle",)), "out": None if out is None else str(out)})
        return
    _print_table(results, out)


def _document(image: Path, results: ResultSet, encodings: tuple[str, ...]) -> dict[str, Any]:
    height, width = results.image_size
    body = results.to_dict(encodings=encodings)
    return {"image": str(image), "height": height, "width": width, "model": body.pop("model_info"), **body}


def _print_table(results: ResultSet, out: Path | None) -> None:
    table = Table("phrase", "score", "area (px)", "bbox x1 y1 x2 y2")
    for r in results:
        table.add_row(r.label or "(exemplars)", f"{r.score:.4f}", str(r.area), " ".join(str(v) for v in r.bbox))
    Console().print(table)
    typer.echo(f"{len(results)} instance(s)")
    if out is not None:
        typer.echo(f"written: {out}")
