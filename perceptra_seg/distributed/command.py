"""``segmentor-cli batch --engine ray``: plan as ``--engine local`` does, run on Ray, merge the shards into ``--out``.

The shards go to the folder ``<out without .json>.shards`` beside ``--out`` (``results.json`` →
``results.shards/``); a re-run with the same ``--out`` resumes from them, and ``--out`` is rewritten from all the
shards after every run, in the planned image order (the file ``--engine local`` writes for the same input).

``--auto --text`` (SAM 3 phrases) keeps its categories file beside ``--out`` as ``--engine local`` does
(:mod:`perceptra_seg.cli.auto_concepts`), written before the job starts; a re-run must give the same phrases in the
same order, and shards written without ``--text`` are refused by a run with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from perceptra_seg.cli.auto_concepts import check_categories, write_categories
from perceptra_seg.cli.batch import _print_summary, progress_bar
from perceptra_seg.cli.common import EXIT_FAILURE, CommonOptions, emit_json, require_output_dirs
from perceptra_seg.exceptions import InvalidInputError

from .engine import run_batch
from .shards import done_ids, write_merged
from .sources import plan_batch

__all__ = ["ray_batch", "shards_dir"]


def shards_dir(out: Path) -> Path:
    """The shard folder of the results file ``out``: ``results.json`` → ``results.shards``."""
    return out.with_name(f"{out.stem}.shards")


def ray_batch(
    opts: CommonOptions,
    images: str,
    prompts: Path | None,
    out: Path,
    fmt: str,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
    *,
    auto: dict[str, Any] | None = None,
    concepts: dict[str, Any] | None = None,
    categories: list[dict[str, Any]] | None = None,
) -> None:
    """Run ``batch`` on Ray and print (or ``--json`` emit) the summary ``--engine local`` prints, plus ``engine``
    and ``shards``. ``auto`` (generator options, ``prompts`` ``None``): automatic masks for every image; with
    ``concepts`` (``{"texts": [...], "threshold": T or None}``) and their ``categories``
    (:func:`~perceptra_seg.cli.auto_concepts.concept_categories`): every instance of each phrase instead.

    Raises:
        InvalidInputError: a ``--format`` other than ``coco-rle``, bad inputs, or an ``--out`` (or its shards)
            holding another run's records (other phrases, or with / without ``--text``).
        ConfigError: Ray missing or the cluster unreachable.
        typer.Exit: with status 1 when an image failed.
    """
    if fmt != "coco-rle":
        raise InvalidInputError(f"--engine ray writes coco-rle results; --format {fmt} needs --engine local")
    settings = opts.load_config()
    jobs, unmatched_images, unmatched_entries = plan_batch(images, prompts, auto=auto, concepts=concepts)
    require_output_dirs(out)
    folder = shards_dir(out)
    categories_file = check_categories(out, fmt, categories) if auto is not None or categories is not None else None
    created = False  # a categories file this run wrote, removed again if the run fails before any shard exists
    if categories is not None and categories_file is not None:
        if not categories_file.exists() and done_ids(folder):
            raise InvalidInputError(f"{folder} holds shards written without --text; choose another --out")
        created = not categories_file.exists()
        write_categories(categories_file, categories)
    console = Console(stderr=True)
    try:
        with progress_bar(console, disable=opts.json) as bar:
            task = bar.add_task("segmenting", total=None)
            summary = run_batch(
                jobs,
                settings,
                address=address,
                workers=workers,
                gpus_per_worker=gpus_per_worker,
                out_dir=folder,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except BaseException:
        if created and categories_file is not None and not done_ids(folder):
            categories_file.unlink(missing_ok=True)  # nothing written: a later run may choose other phrases
        raise
    for failure in summary.failed:
        console.print(f"failed: {failure['image']}: {failure['error']}", markup=False, highlight=False, soft_wrap=True)
    write_merged(folder, jobs, out)
    document = {
        "out": str(out),
        "images": summary.images,
        "processed": summary.processed,
        "skipped_existing": summary.skipped_existing,
        "failed": summary.failed,
        "results_written": summary.results_written,
        "images_without_prompts": len(unmatched_images),
        "prompt_entries_without_image": len(unmatched_entries),
        "engine": "ray",
        "shards": str(folder),
    }
    if categories is not None and categories_file is not None:
        document["categories"] = str(categories_file)
    if opts.json:
        emit_json(document)
    else:
        _print_summary(document)
    if summary.failed:
        raise typer.Exit(EXIT_FAILURE)
