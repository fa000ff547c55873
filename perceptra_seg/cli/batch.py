"""``batch``: many images, prompts from a COCO annotations file or a prompts file, results as a COCO results list.

Inputs:

* ``--images``: a directory (searched recursively for .jpg/.jpeg/.png/.webp/.bmp/.tif/.tiff files) or a text file
  listing one image path per line (relative paths are relative to the list file; blank lines and ``#`` comments are
  ignored).
* ``--prompts``: either a COCO annotations file (``images`` + ``annotations``; every annotation's ``bbox``
  ``[x, y, w, h]`` becomes a box prompt ``[x, y, x + w, y + h]`` of its image, its ``point_coords`` ``[[x, y], ...]``
  (SA-1B's field) foreground clicks of the same prompt, and its ``category_id`` is kept), or a
  JSON object mapping image file names to prompt lists (``{"a.jpg": [{"box": [...]}, {"points": [...]}]}``; a prompt
  may carry a ``category_id``, default 1, and an ``annotation_id``).

Images are matched to prompt entries by their path relative to the directory (or as written in the list file),
then by file name alone. Image ids come from the COCO file; for a prompts mapping they are derived from the file
name (the first 31 bits of its SHA-256), so they stay the same whatever else the mapping holds and across re-runs.

``--auto`` (instead of ``--prompts``) makes every listed image a job of automatic masks
(:meth:`Segmentor.generate <perceptra_seg.Segmentor.generate>` with ``--points-per-side``, ``--pred-iou-thresh``,
``--stability-score-thresh``; unset ones keep the model family's defaults): image ids and records are those
``segment-auto`` writes for the same image names (:mod:`.batch_auto`). With ``--model sam3``, ``--auto --text PHRASE``
(repeatable, ``--threshold``) makes every image a job of every instance of each phrase instead: the records and
categories file ``segment-auto --text`` writes (:mod:`.auto_concepts`), on either engine.

``--format`` chooses the output (:mod:`.batch_output`): ``coco-rle`` (default), ``coco-polygons`` or ``yolo-seg``;
each keeps the source annotation id. The output is written after every image, atomically (temporary file + rename),
so an interrupted run loses nothing; a re-run skips images whose ``image_id`` is already in the output. A failed
image is reported and the run goes on; the exit code is 1 when any image failed.

``--engine ray`` (``--ray-address``, ``--workers``, ``--gpus-per-worker``) runs the same plan on a Ray cluster
(:mod:`perceptra_seg.distributed`): images may also be fsspec URLs, results go to JSONL shards beside ``--out`` and
are merged into the same COCO results file (``coco-rle`` only). The Ray flags are refused with ``--engine local``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult

from .auto_concepts import category_classes, check_categories, concept_job, write_categories
from .batch_auto import (
    AUTO_CATEGORY,
    PointsPerSide,
    PredIouThresh,
    StabilityScoreThresh,
    auto_mode,
    concept_mode,
    generate_image,
    given_options,
    job_categories,
)
from .batch_output import BATCH_FORMATS, BatchFormat, CocoWriter, YoloWriter, open_writer
from .batch_plan import ImageJob, list_images, plan_jobs, stable_image_id
from .common import (
    EXIT_FAILURE,
    CommonOptions,
    command,
    emit_json,
    one_line,
    read_json,
    require_suffix,
)

__all__ = [
    "ImageJob",
    "list_images",
    "plan_jobs",
    "progress_bar",
    "read_results",
    "register",
    "run_job",
    "segment_job",
    "stable_image_id",
]

Engine = Literal["local", "ray"]


def register(app: typer.Typer) -> None:
    """Add ``batch`` to ``app``."""
    command(app, "batch")(batch)


def batch(
    opts: CommonOptions,
    images: Annotated[
        str,
        typer.Option(
            "--images",
            help="Directory of images, or a text file listing image paths (--engine ray: also an fsspec URL such as "
            "file://, s3://, gs://).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="COCO results JSON file, or the yolo-seg directory (resumed when it exists)."),
    ],
    prompts: Annotated[
        Path | None,
        typer.Option("--prompts", help="COCO annotations file, or a JSON mapping image file name -> prompts."),
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Instead of --prompts: automatic masks (segment everything) per image.")
    ] = False,
    points_per_side: PointsPerSide = None,
    pred_iou_thresh: PredIouThresh = None,
    stability_score_thresh: StabilityScoreThresh = None,
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text",
            "-t",
            help="With --auto, SAM 3: every instance of this phrase instead of everything; repeatable (categories).",
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="With --auto --text: keep instances scoring above this (default 0.5)."),
    ] = None,
    fmt: Annotated[
        BatchFormat,
        typer.Option("--format", help=f"Output: {' | '.join(BATCH_FORMATS)} (COCO RLE, COCO polygons, YOLO-seg)."),
    ] = "coco-rle",
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="local: this process, one image at a time | ray: Ray Data on a Ray cluster (needs the ray extra; "
            "writes JSONL shards beside --out, then the merged COCO results).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="--engine ray: 'auto' (the cluster this machine belongs to) or HOST:PORT; default: Ray's own "
            "(RAY_ADDRESS, else a cluster started on this machine with `ray start`, else a new local instance).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="--engine ray: model actors, each loads the model once.")
    ] = None,
    gpus_per_worker: Annotated[
        float | None, typer.Option("--gpus-per-worker", min=0.0, help="--engine ray: GPUs per model actor.")
    ] = None,
) -> None:
    """Segment many images; write COCO results or YOLO-seg labels (resumable; failed images are reported, the run
    goes on)."""
    settings = opts.load_config()  # an invalid configuration is an error even when every image is already done
    if fmt != "yolo-seg":  # a misnamed results file is refused before the inputs are read
        require_suffix(out, (".json",), "--out")
    generator = given_options(
        points_per_side=points_per_side,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
    )
    categories = concept_mode(auto, settings.model.name, text, threshold, generator)  # before any model loads
    options = auto_mode(prompts, auto, generator)
    concepts = None if categories is None else {"texts": list(text or ()), "threshold": threshold}
    if engine == "ray":
        from perceptra_seg.distributed.command import ray_batch

        ray_batch(
            opts,
            images,
            prompts,
            out,
            fmt,
            ray_address,
            workers or 1,
            gpus_per_worker or 0.0,
            auto=options,
            concepts=concepts,
            categories=categories,
        )
        return
    ray_flags = {"--ray-address": ray_address, "--workers": workers, "--gpus-per-worker": gpus_per_worker}
    given = [flag for flag, value in ray_flags.items() if value is not None]
    if given:
        raise InvalidInputError(f"{', '.join(given)} apply to --engine ray only")
    if "://" in images:
        raise InvalidInputError(f"--images {images}: URLs need --engine ray; --engine local reads local files")
    jobs, unmatched_images, unmatched_entries = plan_jobs(Path(images), prompts, auto=options, concepts=concepts)
    categories_file = check_categories(out, fmt, categories) if options is not None else None
    if categories is None:
        writer = open_writer(fmt, out, job_categories(jobs), read_results)
    else:
        ids, names = category_classes(categories)
        writer = open_writer(fmt, out, ids, read_results, names)
    todo = [job for job in jobs if job.image_id not in writer.done_ids]
    # the categories file goes beside the results once the model has loaded, and at the latest with them
    named: Callable[[], None] | None = None
    if categories is not None and categories_file is not None:
        named = partial(write_categories, categories_file, categories)
    failures = _run(opts, todo, writer, named) if todo else []
    writer.finish()
    if named is not None:
        named()
    summary = {
        "out": str(out),
        "images": len(jobs),
        "processed": len(todo) - len(failures),
        "skipped_existing": len(jobs) - len(todo),
        "failed": failures,
        "results_written": writer.written,
        "images_without_prompts": len(unmatched_images),
        "prompt_entries_without_image": len(unmatched_entries),
    }
    if categories_file is not None and categories is not None:
        summary["categories"] = str(categories_file)
    if opts.json:
        emit_json(summary)
    else:
        _print_summary(summary)
    if failures:
        raise typer.Exit(EXIT_FAILURE)


def _run(
    opts: CommonOptions,
    jobs: list[ImageJob],
    writer: CocoWriter | YoloWriter,
    loaded: Callable[[], None] | None = None,
) -> list[dict[str, str]]:
    """Segment ``jobs``, handing each image's results to ``writer`` (which writes them out) as it finishes;
    ``loaded()`` is called once the model has loaded.

    Returns:
        The failures, each ``{"image": name, "error": message}``.
    """
    failures: list[dict[str, str]] = []
    with opts.segmentor() as seg, progress_bar(Console(stderr=True), disable=opts.json) as progress:
        if loaded is not None:
            loaded()
        task = progress.add_task("segmenting", total=len(jobs))
        chunk = seg.config.input.max_prompts
        for job in jobs:
            try:
                writer.add(job.image_id, job.name, *run_job(seg, job.path, job, chunk))
            except Exception as exc:  # a failed image is reported and the run goes on
                if opts.debug:
                    traceback.print_exc()
                failures.append({"image": job.name, "error": one_line(exc)})
                message = f"failed: {job.name}: {one_line(exc)}"
                progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
            progress.advance(task)
    return failures


def run_job(
    seg: Any, image: Any, job: ImageJob, chunk: int
) -> tuple[list[SegmentationResult], list[int], list[int | None]]:
    """Segment one job: its prompts (:func:`segment_job`), its automatic masks when ``job.auto`` is set, or every
    instance of each of its phrases when ``job.concepts`` is (:func:`~.auto_concepts.concept_job`).

    ``image`` is ``job.path`` or its decoded RGB ``uint8`` ``[H, W, 3]`` array (the Ray engine's). Both batch
    engines call this.

    Returns:
        ``(results, categories, annotation_ids)`` as the writers and
        :func:`~perceptra_seg.cli.batch_output.coco_records` take them (``results[i].prompt_index`` indexes the two
        lists).
    """
    if job.concepts is not None:
        return concept_job(seg, image, job.concepts["texts"], job.concepts["threshold"])
    if job.auto is None:
        return segment_job(seg, image, job.prompts, chunk), job.categories, job.annotation_ids
    results = generate_image(seg, image, job.auto)
    return results, [AUTO_CATEGORY] * len(results), [None] * len(results)


def segment_job(seg: Any, image: Any, prompts: list[dict[str, Any]], chunk: int) -> list[SegmentationResult]:
    """Every prompt of one image, sent to ``seg.segment`` in groups of at most ``chunk`` (``input.max_prompts``)
    with one encoder pass (the embedding is cached); ``prompt_index`` counts over all of ``prompts``, RLE output.

    ``image`` is what :meth:`~perceptra_seg.Segmentor.segment` accepts (a path, or the decoded RGB ``uint8``
    ``[H, W, 3]`` array the Ray engine hands over). Both batch engines call this, so their results are the same.
    """
    results: list[SegmentationResult] = []
    for start in range(0, len(prompts), chunk):
        part = seg.segment(image, prompts=prompts[start : start + chunk], output_formats=["rle"])
        for result in part:
            result.prompt_index += start
        results.extend(part)
    return results


def read_results(out: Path) -> list[dict[str, Any]]:
    """The COCO results list already in ``out`` (``[]`` when it does not exist), to resume a run.

    Raises:
        InvalidInputError: ``out`` exists but is not a list of COCO results.
    """
    if not out.exists():
        return []
    data = read_json(out, "existing results file")
    if not isinstance(data, list) or not all(isinstance(item, dict) and "image_id" in item for item in data):
        raise InvalidInputError(f"{out} exists but is not a COCO results list; choose another --out or remove it")
    return data


def progress_bar(console: Console, *, disable: bool) -> Progress:
    """A bar over images on ``console`` (stderr), hidden with ``--json`` or when it is not a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable or not console.is_terminal,
    )


def _print_summary(summary: dict[str, Any]) -> None:
    out, failed = summary["out"], summary["failed"]
    typer.echo(
        f"{summary['processed']} image(s) segmented, {summary['skipped_existing']} already in {out}, "
        f"{len(failed)} failed; {summary['results_written']} result(s) written to {out}"
    )
    if summary["images_without_prompts"]:
        typer.echo(f"{summary['images_without_prompts']} image(s) have no prompts")
    if summary["prompt_entries_without_image"]:
        typer.echo(f"{summary['prompt_entries_without_image']} prompt entries have no image")
