"""Automatic masks for many images: what ``segment-auto`` and ``batch --auto`` share.

Both commands take the same generator flags (:data:`PointsPerSide`, :data:`PredIouThresh`,
:data:`StabilityScoreThresh`; unset ones keep the model family's generator defaults), run
:meth:`Segmentor.run <perceptra_seg.Segmentor.run>` with an :class:`~perceptra_seg.requests.AutoMaskRequest` per image
(:func:`generate_image`), and give every mask the ``category_id`` :data:`AUTO_CATEGORY` and no source annotation id,
so the COCO records of an image are the same whichever command (and, for ``batch``, whichever engine) wrote them.
With ``--model sam3``, ``--text PHRASE`` (repeatable) and ``--threshold`` make both commands write every instance of
each phrase instead (:mod:`.auto_concepts`; :func:`concept_mode` checks ``batch``'s flags).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from perceptra_seg.automatic.options import auto_options
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult
from perceptra_seg.requests import AutoMaskRequest
from perceptra_seg.utils.masks import OutputFormat

from .auto_concepts import concept_categories

if TYPE_CHECKING:
    from .batch import ImageJob

__all__ = [
    "AUTO_CATEGORY",
    "PointsPerSide",
    "PredIouThresh",
    "StabilityScoreThresh",
    "auto_mode",
    "check_options",
    "concept_mode",
    "generate_image",
    "generator_option",
    "given_options",
    "job_categories",
]

#: The ``category_id`` of every automatic mask (they have no class).
AUTO_CATEGORY = 1


def generator_option(flag: str, text: str) -> Any:
    """A Typer option of a generator setting whose default is the model family's."""
    return typer.Option(flag, help=text + " Default: the model family's generator.")


PointsPerSide = Annotated[int | None, generator_option("--points-per-side", "Grid points along each crop side.")]
PredIouThresh = Annotated[float | None, generator_option("--pred-iou-thresh", "Keep masks above this predicted IoU.")]
StabilityScoreThresh = Annotated[
    float | None, generator_option("--stability-score-thresh", "Keep masks at least this stable.")
]


def given_options(**values: Any) -> dict[str, Any]:
    """The generator options that were given (``None`` values dropped), named as :class:`AutoMaskRequest` takes
    them."""
    return {name: value for name, value in values.items() if value is not None}


def check_options(options: dict[str, Any]) -> None:
    """Check the option values before any image runs (their ranges are the same for every model family; only the
    defaults differ).

    Raises:
        InvalidInputError: an unknown option or a value out of range.
    """
    auto_options("sam1", **options)


def generate_image(
    seg: Any, image: Any, options: dict[str, Any], formats: tuple[OutputFormat, ...] = ("rle",)
) -> list[SegmentationResult]:
    """Every automatic mask of one image (``image``: what the input policy accepts, e.g. a path or an RGB ``uint8``
    ``[H, W, 3]`` array); ``prompt_index`` numbers the masks."""
    return list(seg.run(AutoMaskRequest(image, options, formats)))


def auto_mode(prompts: Path | None, auto: bool, options: dict[str, Any]) -> dict[str, Any] | None:
    """The generator options of an ``--auto`` run (checked), or ``None`` for a run with ``--prompts``.

    Raises:
        InvalidInputError: both or neither of ``--prompts`` and ``--auto``, generator flags without ``--auto``, or
            a generator value out of range.
    """
    if (prompts is None) == (not auto):
        raise InvalidInputError("give exactly one of --prompts FILE and --auto (automatic masks)")
    if not auto:
        if options:
            flags = ", ".join("--" + name.replace("_", "-") for name in options)
            raise InvalidInputError(f"{flags} apply to --auto only")
        return None
    check_options(options)
    return options


def concept_mode(
    auto: bool, model: str, texts: list[str] | None, threshold: float | None, options: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """The COCO categories of a ``batch --auto --text`` run (``[{"id": 1, "name": phrase}, ...]``, see
    :func:`~.auto_concepts.concept_categories`), or ``None`` for a run of prompts or of automatic masks; checked
    before any model loads.

    Raises:
        InvalidInputError: ``--text`` or ``--threshold`` without ``--auto``; with ``--auto``: ``sam3`` without
            ``--text``, generator flags with it, ``--threshold`` without it, an empty or repeated phrase.
        TextPromptsUnsupportedError: ``--auto --text`` with a model other than ``sam3``.
    """
    if not auto:
        given = ["--text"] if texts else []
        given += ["--threshold"] if threshold is not None else []
        if given:
            raise InvalidInputError(f"{', '.join(given)} apply to --auto only")
        return None
    return concept_categories(model, texts, threshold, options)


def job_categories(jobs: Sequence[ImageJob]) -> list[int]:
    """Every ``category_id`` the results of ``jobs`` can have (the YOLO writer's classes)."""
    return [AUTO_CATEGORY] if any(job.auto is not None for job in jobs) else [c for j in jobs for c in j.categories]
