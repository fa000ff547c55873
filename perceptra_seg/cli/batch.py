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
``segment-auto`` writes for the same image names (:mod:`.batch_auto`).

``--format`` chooses the output (:mod:`.batch_output`): ``coco-rle`` (default), ``coco-polygons`` or ``yolo-seg``;
each keeps the source annotation id. The output is written after every image, atomically (temporary file + rename),
so an interrupted run loses nothing; a re-run skips images whose ``image_id`` is already in the output. A failed
image is reported and the run goes on; the exit code is 1 when any image failed.

``--engine ray`` (``--ray-address``, ``--workers``, ``--gpus-per-worker``) runs the same plan on a Ray cluster
(:mod:`perceptra_seg.distributed`): images may also be fsspec URLs, results go to JSONL shards beside ``--out`` and
are merged into the same COCO results file (``coco-rle`` only). The Ray flags are refused with ``--engine local``.
"""

from __future__ import annotations

import hashlib
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult

from .batch_auto import (
    AUTO_CATEGORY,
    PointsPerSide,
    PredIouThresh,
    StabilityScoreThresh,
    auto_mode,
    generate_image,
    given_options,
    job_categories,
)
from .batch_output import BATCH_FORMATS, BatchFormat, CocoWriter, YoloWriter, open_writer
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
    """

    path: Path | str
    name: str
    image_id: int
    prompts: list[dict[str, Any]] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    annotation_ids: list[int | None] = field(default_factory=list)
    auto: dict[str, Any] | None = None


@dataclass
class _Entry:
    image_id: int
    prompts: list[dict[str, Any]]
    categories: list[int]
    annotation_ids: list[int | None] = field(default_factory=list)


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
    opts.load_config()  # an invalid configuration is an error even when every image is already done
    if fmt != "yolo-seg":  # a misnamed results file is refused before the inputs are read
        require_suffix(out, (".json",), "--out")
    generator = given_options(
        points_per_side=points_per_side,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
    )
    options = auto_mode(prompts, auto, generator)
    if engine == "ray":
        from perceptra_seg.distributed.command import ray_batch

        ray_batch(opts, images, prompts, out, fmt, ray_address, workers or 1, gpus_per_worker or 0.0, auto=options)
        return
    ray_flags = {"--ray-address": ray_address, "--workers": workers, "--gpus-per-worker": gpus_per_worker}
    given = [flag for flag, value in ray_flags.items() if value is not None]
    if given:
        raise InvalidInputError(f"{', '.join(given)} apply to --engine ray only")
    if "://" in images:
        raise InvalidInputError(f"--images {images}: URLs need --engine ray; --engine local reads local files")
    jobs, unmatched_images, unmatched_entries = plan_jobs(Path(images), prompts, auto=options)
    writer = open_writer(fmt, out, job_categories(jobs), read_results)
    todo = [job for job in jobs if job.image_id not in writer.done_ids]
    failures = _run(opts, todo, writer) if todo else []
    writer.finish()
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
    if opts.json:
        emit_json(summary)
    else:
        _print_summary(summary)
    if failures:
        raise typer.Exit(EXIT_FAILURE)


def _run(opts: CommonOptions, jobs: list[ImageJob], writer: CocoWriter | YoloWriter) -> list[dict[str, str]]:
    """Segment ``jobs``, handing each image's results to ``writer`` (which writes them out) as it finishes.

    Returns:
        The failures, each ``{"image": name, "error": message}``.
    """
    failures: list[dict[str, str]] = []
    with opts.segmentor() as seg, progress_bar(Console(stderr=True), disable=opts.json) as progress:
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
    """Segment one job: its prompts (:func:`segment_job`), or its automatic masks when ``job.auto`` is set.

    ``image`` is ``job.path`` or its decoded RGB ``uint8`` ``[H, W, 3]`` array (the Ray engine's). Both batch
    engines call this.

    Returns:
        ``(results, categories, annotation_ids)`` as the writers and
        :func:`~perceptra_seg.cli.batch_output.coco_records` take them (``results[i].prompt_index`` indexes the two
        lists).
    """
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


def plan_jobs(
    images: Any,
    prompts: Path | None,
    *,
    lister: Callable[[Any], list[tuple[str, Any]]] | None = None,
    auto: dict[str, Any] | None = None,
) -> tuple[list[ImageJob], list[str], list[str]]:
    """Match images with prompt entries, or (``prompts`` ``None``, ``auto`` the generator options) make every image
    a job of automatic masks, its id derived from its name (:func:`stable_image_id`, as ``segment-auto`` does).

    ``lister(images)`` gives the ``(name, location)`` of every image (default :func:`list_images` over a local
    directory or list file; the Ray engine passes an fsspec lister, whose locations are URL strings).

    Returns:
        ``(jobs, images_without_prompts, entries_without_image)``; jobs are in image-name order and include only
        images with at least one prompt.

    Raises:
        InvalidInputError: unreadable inputs, a malformed prompts file, or two entries with the same image id.
    """
    if prompts is None:
        if auto is None:
            raise InvalidInputError("a batch needs prompts or automatic-mask options")
        listing = (lister or list_images)(images)
        return [ImageJob(path, name, stable_image_id(name), auto=dict(auto)) for name, path in listing], [], []
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
