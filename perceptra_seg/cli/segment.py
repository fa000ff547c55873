"""``segment-box``, ``segment-points`` and ``segment``: one image, prompts from flags or a JSON file.

Coordinates are pixels of the original image: boxes ``X1 Y1 X2 Y2`` (XYXY), points ``X Y LABEL`` with label 1 =
foreground, 0 = background.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from perceptra_seg.decoding import Strategy
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult

from .common import (
    CommonOptions,
    command,
    emit_json,
    read_json,
    require_output_dirs,
    require_suffix,
    result_summary,
    write_atomic,
)

__all__ = ["MaskFormat", "register"]


class MaskFormat(str, Enum):
    """What ``--out`` receives for a single mask."""

    png = "png"  # single-channel PNG (bit depth from outputs.png_bit_depth)
    rle = "rle"  # COCO RLE {"size": [H, W], "counts": ...} as JSON
    polygons = "polygons"  # list of polygons (rings of [x, y]) as JSON
    json = "json"  # the whole result: score, area, bbox, rle, polygons


_SDK_FORMATS = {
    MaskFormat.png: ["rle", "png"],
    MaskFormat.rle: ["rle"],
    MaskFormat.polygons: ["rle", "polygons"],
    MaskFormat.json: ["rle", "polygons"],
}

OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Where to write the mask: a .png file (the mask as PNG) or a .json file."),
]
FormatOption = Annotated[
    MaskFormat | None,
    typer.Option(
        "--format",
        "-f",
        help="Format of --out: png needs a .png name, rle/polygons/json a .json name; default: from the name.",
    ),
]
OverlayOption = Annotated[
    Path | None, typer.Option("--overlay", help="Also write a PNG (.png) of the image with masks and prompts drawn.")
]
MultimaskOption = Annotated[
    bool, typer.Option("--multimask", help="Predict 3 candidate masks and keep the best scored one.")
]
ImageOption = Annotated[Path, typer.Option("--image", "-i", help="Image file (JPEG, PNG, WEBP, BMP, TIFF).")]


def register(app: typer.Typer) -> None:
    """Add the single-image commands to ``app``."""
    command(app, "segment-box")(segment_box)
    command(app, "segment-points", cls=_PointsCommand)(segment_points)
    command(app, "segment")(segment)


def segment_box(
    opts: CommonOptions,
    image: ImageOption,
    box: Annotated[
        tuple[float, float, float, float],
        typer.Option("--box", "-b", metavar="X1 Y1 X2 Y2", help="Pixels of the top-left and bottom-right corners."),
    ],
    out: OutOption = None,
    fmt: FormatOption = None,
    overlay: OverlayOption = None,
    multimask: MultimaskOption = False,
) -> None:
    """Segment the object inside one box."""
    _single(opts, image, out, fmt, overlay, lambda seg, **kw: seg.segment_from_box(image, box=box, **kw), multimask)


class PointArg(NamedTuple):
    """One click of ``--point X Y LABEL``: pixel coordinates and label (1 foreground, 0 background)."""

    x: float
    y: float
    label: int


def parse_point(value: Any) -> PointArg:
    """``("x", "y", "label")`` strings from the command line -> :class:`PointArg`."""
    x, y, label = value
    try:
        return PointArg(float(x), float(y), int(label))
    except ValueError:
        raise ValueError(f"expected X Y LABEL with numbers X, Y and an integer LABEL, got {' '.join(value)}") from None


class _PointsCommand(TyperCommand):
    """Typer cannot declare a repeatable option of three values; this makes ``--point`` consume three.

    Typer builds ``--point`` as a repeatable option whose items go through :func:`parse_point`; setting
    ``nargs = 3`` here makes each occurrence take ``X Y LABEL``, so the command receives a list of
    :class:`PointArg`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.name == "point":
                param.nargs = 3
                param.metavar = "X Y LABEL"


def segment_points(
    opts: CommonOptions,
    image: ImageOption,
    point: Annotated[
        list[PointArg],
        typer.Option(
            "--point",
            "-p",
            parser=parse_point,
            help="X Y LABEL; repeat for several clicks (label 1 = foreground, 0 = background).",
        ),
    ],
    out: OutOption = None,
    fmt: FormatOption = None,
    overlay: OverlayOption = None,
    multimask: MultimaskOption = False,
) -> None:
    """Segment one object from clicks."""
    _single(
        opts, image, out, fmt, overlay, lambda seg, **kw: seg.segment_from_points(image, points=point, **kw), multimask
    )


def segment(
    opts: CommonOptions,
    image: ImageOption,
    prompts: Annotated[
        Path,
        typer.Option(
            "--prompts",
            help='JSON file: [{"box": [x1, y1, x2, y2], "points": [[x, y, label], ...]}, ...] or {"prompts": [...]}.',
        ),
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results JSON file.")] = None,
    strategy: Annotated[
        Strategy, typer.Option("--strategy", help="all: one mask per prompt; largest; merge: union of all masks.")
    ] = "all",
    overlay: OverlayOption = None,
    multimask: Annotated[bool, typer.Option("--multimask", help="3 candidate masks per prompt.")] = False,
) -> None:
    """Segment every prompt of a JSON file on one image (one encoder pass).

    The results file holds {"image", "height", "width", "model", "results": [{prompt_index, score, area, bbox, rle,
    polygons}, ...]}.
    """
    _require_file(image)
    require_suffix(out, (".json",), "--out")
    require_suffix(overlay, (".png",), "--overlay")
    require_output_dirs(out, overlay)
    prompt_list = load_prompt_list(prompts)
    with opts.segmentor() as seg:
        results = seg.segment(
            image,
            prompts=prompt_list,
            strategy=strategy,
            output_formats=["rle", "polygons"],
            multimask=multimask,
            return_overlay=overlay is not None,
        )
    document = _document(image, results, polygons=True)
    if out is not None:
        write_atomic(out, json.dumps(document) + "\n")
    if overlay is not None and results:
        write_atomic(overlay, results[0].overlay_png or b"")
    if opts.json:
        emit_json({**_document(image, results, polygons=False), "out": _str(out), "overlay": _str(overlay)})
    else:
        _print_table(results, out, overlay)


def load_prompt_list(path: Path) -> list[Any]:
    """Read a prompts file for ``segment``: a JSON list of prompt objects, or ``{"prompts": [...]}``."""
    data = read_json(path, "prompts file")
    if isinstance(data, dict) and set(data) == {"prompts"}:
        data = data["prompts"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise InvalidInputError(
            f"prompts file {path} must hold a list of prompt objects "
            '({"box": [x1, y1, x2, y2], "points": [[x, y, label], ...]}) or {"prompts": [...]}'
        )
    if not data:
        raise InvalidInputError(f"prompts file {path} holds no prompts")
    return data


def _single(
    opts: CommonOptions,
    image: Path,
    out: Path | None,
    fmt: MaskFormat | None,
    overlay: Path | None,
    call: Callable[..., SegmentationResult],
    multimask: bool,
) -> None:
    """Shared body of the one-prompt commands: check paths, run ``call(seg, **options)``, write the outputs."""
    _require_file(image)
    mask_format = _mask_format(fmt, out)
    require_suffix(overlay, (".png",), "--overlay")
    require_output_dirs(out, overlay)
    with opts.segmentor() as seg:
        result = call(
            seg, output_formats=_SDK_FORMATS[mask_format], multimask=multimask, return_overlay=overlay is not None
        )
    _finish_single(opts, image, result, out, mask_format, overlay)


def _require_file(image: Path) -> None:
    """Fail before the model loads (which can take a while) when the image file does not exist."""
    if not image.is_file():
        raise InvalidInputError(f"image file not found: {str(image)!r}")


def _mask_format(fmt: MaskFormat | None, out: Path | None) -> MaskFormat:
    """The format of ``--out``: ``--format`` if given, else from the name; the name must say what is written.

    ``.png`` holds the mask as a PNG image, ``.json`` the JSON formats (rle, polygons, json). Any other name
    (``mask.jpg``: a lossy format that cannot hold an exact mask) is refused, as is a ``--format`` that contradicts
    the name.

    Raises:
        InvalidInputError: the name's extension is neither ``.png`` nor ``.json``, or does not match ``--format``.
    """
    if out is None:
        return fmt or MaskFormat.json
    require_suffix(out, (".png", ".json"), "--out")
    by_name = MaskFormat.png if out.suffix.lower() == ".png" else MaskFormat.json
    if fmt is None:
        return by_name
    if (fmt is MaskFormat.png) != (by_name is MaskFormat.png):
        kind = "a PNG image" if fmt is MaskFormat.png else "JSON"
        raise InvalidInputError(f"--format {fmt.value} writes {kind}, but --out {out} is named {out.suffix}")
    return fmt


def _mask_payload(result: SegmentationResult, mask_format: MaskFormat) -> bytes | str:
    if mask_format is MaskFormat.png:
        return result.png_bytes or b""
    if mask_format is MaskFormat.rle:
        return json.dumps(result.rle) + "\n"
    if mask_format is MaskFormat.polygons:
        return json.dumps(result.polygons) + "\n"
    return json.dumps({**result_summary(result, polygons=True), "model": result.model_info}) + "\n"


def _finish_single(
    opts: CommonOptions,
    image: Path,
    result: SegmentationResult,
    out: Path | None,
    mask_format: MaskFormat,
    overlay: Path | None,
) -> None:
    if out is not None:
        write_atomic(out, _mask_payload(result, mask_format))
    if overlay is not None:
        write_atomic(overlay, result.overlay_png or b"")
    if opts.json:
        emit_json({**_document(image, [result], polygons=False), "out": _str(out), "overlay": _str(overlay)})
    else:
        _print_table([result], out, overlay)


def _document(image: Path, results: list[SegmentationResult], *, polygons: bool) -> dict[str, Any]:
    height, width = results[0].rle["size"] if results and results[0].rle else (None, None)
    return {
        "image": str(image),
        "height": height,
        "width": width,
        "model": results[0].model_info if results else {},
        "results": [result_summary(r, polygons=polygons) for r in results],
    }


def _print_table(results: list[SegmentationResult], out: Path | None, overlay: Path | None) -> None:
    console = Console()
    table = Table("prompt", "score", "area (px)", "bbox x1 y1 x2 y2")
    for r in results:
        table.add_row(str(r.prompt_index), f"{r.score:.4f}", str(r.area), " ".join(str(v) for v in r.bbox))
    console.print(table)
    # Paths as plain text: never wrapped at the terminal width nor read as Rich markup, so they can be copied.
    if out is not None:
        typer.echo(f"written: {out}")
    if overlay is not None:
        typer.echo(f"overlay: {overlay}")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
