"""``segment-auto``: segment everything on one image or a directory of images; a COCO results file out.

Each image's masks come from :meth:`Segmentor.generate <perceptra_seg.Segmentor.generate>` (through an
:class:`~perceptra_seg.requests.AutoMaskRequest`), one COCO result per mask with ``score`` (predicted IoU) and
``stability_score``. Image ids are derived from the image's name as in ``batch`` (the first 31 bits of the SHA-256
of its path relative to the directory, or of the file name), so they stay the same across runs. The output is
rewritten atomically after every image; a re-run skips images whose id is already in it (an image without any kept
mask is therefore segmented again). A failed image is reported and the run goes on; the exit code is 1 when any
failed. ``--overlays DIR`` also writes ``DIR/<name>.png``: the image with its masks drawn. ``--format`` writes COCO
RLE (default), COCO polygons or YOLO-seg labels, as ``batch --format`` does (:mod:`.batch_output`).

With ``--model sam3``, ``--text PHRASE`` (repeatable) replaces the automatic masks by every instance of each phrase,
the phrases being the categories (:mod:`.auto_concepts`).
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from perceptra_seg.automatic.options import auto_options
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.utils.masks import OutputFormat
from perceptra_seg.utils.overlay import render_overlay

from .auto_concepts import check_categories, concept_categories, concept_image, write_categories
from .batch import list_images, progress_bar, read_results, stable_image_id
from .batch_auto import (
    AUTO_CATEGORY,
    PointsPerSide,
    PredIouThresh,
    StabilityScoreThresh,
    generate_image,
    given_options,
)
from .batch_auto import generator_option as _opt
from .batch_output import BATCH_FORMATS, BatchFormat, CocoWriter, YoloWriter, open_writer
from .common import (
    EXIT_FAILURE,
    CommonOptions,
    command,
    emit_json,
    one_line,
    write_atomic,
)

if TYPE_CHECKING:
    from perceptra_seg.core import Segmentor

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``segment-auto`` to ``app``."""
    command(app, "segment-auto")(segment_auto)


def segment_auto(
    opts: CommonOptions,
    image: Annotated[Path, typer.Option("--image", "-i", help="An image file, or a directory (searched recursively).")],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="COCO results JSON file, or the yolo-seg directory (resumed when it exists)."),
    ],
    overlays: Annotated[
        Path | None, typer.Option("--overlays", help="Directory for one PNG per image with its masks drawn.")
    ] = None,
    points_per_side: PointsPerSide = None,
    points_per_batch: Annotated[int | None, _opt("--points-per-batch", "Grid points per decoder call.")] = None,
    pred_iou_thresh: PredIouThresh = None,
    stability_score_thresh: StabilityScoreThresh = None,
    box_nms_thresh: Annotated[float | None, _opt("--box-nms-thresh", "Box IoU of the NMS within a crop.")] = None,
    crop_n_layers: Annotated[int | None, _opt("--crop-n-layers", "Extra layers of image crops.")] = None,
    crop_n_points_downscale_factor: Annotated[
        int | None, _opt("--crop-n-points-downscale-factor", "Fewer points per side in deeper crop layers.")
    ] = None,
    min_mask_region_area: Annotated[
        int | None, _opt("--min-mask-region-area", "Remove islands and holes smaller than this (pixels).")
    ] = None,
    use_m2m: Annotated[bool | None, _opt("--use-m2m/--no-m2m", "SAM 2: refine each mask with its own logits.")] = None,
    fmt: Annotated[
        BatchFormat,
        typer.Option("--format", help=f"Output: {' | '.join(BATCH_FORMATS)} (as batch --format)."),
    ] = "coco-rle",
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text", "-t", help="SAM 3: every instance of this phrase instead of everything; repeatable (categories)."
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="With --text: keep instances scoring above this (default 0.5)."),
    ] = None,
) -> None:
    """Segment everything (automatic masks), or every instance of phrases (SAM 3, --text), on an image or a
    directory; write a COCO results file."""
    options = given_options(
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
        box_nms_thresh=box_nms_thresh,
        crop_n_layers=crop_n_layers,
        crop_n_points_downscale_factor=crop_n_points_downscale_factor,
        min_mask_region_area=min_mask_region_area,
        use_m2m=use_m2m,
    )
    categories = concept_categories(opts.load_config().model.name, text, threshold, options)  # before loading
    if overlays is not None and not overlays.is_dir():
        raise InvalidInputError(f"--overlays {overlays} is not a directory")
    images = _images(image)
    categories_file = check_categories(out, fmt, categories)
    if categories is None:
        writer = open_writer(fmt, out, [AUTO_CATEGORY], read_results)
    else:
        ids = [c["id"] for c in categories]
        writer = open_writer(fmt, out, ids, read_results, {c["id"]: c["name"] for c in categories})
    concepts = (list(text or ()), threshold) if categories is not None else None
    todo = [(name, path) for name, path in images if stable_image_id(name) not in writer.done_ids]
    failures: list[dict[str, str]] = []
    if todo:
        with opts.segmentor() as seg, progress_bar(Console(stderr=True), disable=opts.json) as progress:
            if categories is None:
                auto_options(seg.backend.family, **options)  # a bad value fails once, before the first image
            else:
                write_categories(categories_file, categories)  # once the model has loaded
            task = progress.add_task("segmenting everything" if concepts is None else "segmenting", total=len(todo))
            for name, path in todo:
                try:
                    _one_image(seg, name, path, options, writer, overlays, concepts)
                except Exception as exc:  # a failed image is reported and the run goes on
                    if opts.debug:
                        traceback.print_exc()
                    failures.append({"image": name, "error": one_line(exc)})
                    progress.console.print(f"failed: {name}: {one_line(exc)}", markup=False, highlight=False)
                progress.advance(task)
    writer.finish()
    written = writer.written
    summary = {
        "out": str(out),
        "images": len(images),
        "processed": len(todo) - len(failures),
        "skipped_existing": len(images) - len(todo),
        "failed": failures,
        "results_written": written,
    }
    if categories is not None:
        summary["categories"] = str(categories_file)
    if opts.json:
        emit_json(summary)
    else:
        typer.echo(
            f"{summary['processed']} image(s) segmented, {summary['skipped_existing']} already in {out}, "
            f"{len(failures)} failed; {written} mask(s) written to {out}"
        )
    if failures:
        raise typer.Exit(EXIT_FAILURE)


def _one_image(
    seg: Segmentor,
    name: str,
    path: Path,
    options: dict[str, Any],
    writer: CocoWriter | YoloWriter,
    overlays: Path | None,
    concepts: tuple[list[str], float | None] | None,
) -> None:
    """Segment everything (or, with ``concepts = (phrases, threshold)``, every instance of each phrase) on one
    image, hand the masks to ``writer`` and draw the overlay."""
    pixels = seg.input_policy.load(path)
    formats: tuple[OutputFormat, ...] = ("rle", "numpy") if overlays is not None else ("rle",)
    if concepts is None:
        results = generate_image(seg, pixels, options, formats)
        categories = [AUTO_CATEGORY] * len(results)  # prompt_index numbers the masks
    else:
        results = concept_image(seg, pixels, concepts[0], concepts[1], formats)
        categories = list(range(1, len(concepts[0]) + 1))  # prompt_index is the phrase's index
    writer.add(stable_image_id(name), name, results, categories, [None] * len(categories))
    if overlays is not None:
        picture = render_overlay(pixels, [r.mask for r in results if r.mask is not None])
        write_atomic(overlays / (Path(name).with_suffix("").as_posix().replace("/", "__") + ".png"), picture)


def _images(source: Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of the one image file, or of every image in a directory (names relative to it)."""
    if source.is_file():
        return [(source.name, source)]
    if source.is_dir():
        found = list_images(source)
        if not found:
            raise InvalidInputError(f"--image {source} holds no image files")
        return found
    raise InvalidInputError(f"image file or directory not found: {str(source)!r}")
