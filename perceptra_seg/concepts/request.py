"""The concept-segmentation request: every instance of a phrase (and/or exemplar boxes) on one image."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from ..utils.masks import OutputFormat, validate_formats

__all__ = ["MAX_PHRASES", "MAX_PHRASE_CHARS", "ConceptRequest", "TextPromptsUnsupportedError", "parse_exemplars"]


class TextPromptsUnsupportedError(InvalidInputError):
    """Text / exemplar prompts sent to a model that has none (every model but ``sam3``); HTTP 400."""

    code = "text_prompts_unsupported"


#: Phrases one request may carry (each costs one detector pass on the shared image encoding).
MAX_PHRASES = 16
#: Characters of one phrase (SAM 3's text encoder reads 30 tokens; longer text is cut, as Meta's tokenizer does).
MAX_PHRASE_CHARS = 200
#: Exemplar boxes one request may carry.
MAX_EXEMPLARS = 32
#: Largest coordinate kept: the rows are float32, and a larger value would become infinite there.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _listed(value: Any, what: str) -> tuple[Any, ...]:
    """``value`` as a tuple: ``None`` → empty, one string → itself alone, any other iterable → its items.

    Raises:
        InvalidInputError: a value that is not a list (a number, bytes, a mapping).
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidInputError(f"{what} must be a list, got {type(value).__name__}")
    return tuple(value)


def check_exemplars_inside(exemplars: np.ndarray, width: int, height: int) -> None:
    """Refuse exemplar rows ``[K, 5]`` float32 ``(x1, y1, x2, y2, label)`` reaching outside a ``width`` × ``height``
    image (pixels of the original image).

    Raises:
        InvalidInputError: a box coordinate below 0 or beyond the image's width / height.
    """
    if len(exemplars) and (
        exemplars[:, [0, 2]].min() < 0
        or exemplars[:, [0, 2]].max() > width
        or exemplars[:, [1, 3]].min() < 0
        or exemplars[:, [1, 3]].max() > height
    ):
        raise InvalidInputError(f"exemplar boxes must lie inside the {width}×{height} image")


def parse_exemplars(exemplars: Sequence[Any] | None) -> np.ndarray:
    """Exemplars as float32 ``[K, 5]`` rows ``(x1, y1, x2, y2, label)``.

    Each exemplar is ``{"box": (x1, y1, x2, y2), "label": 1 | 0}`` (label 1 = positive, the default; 0 = negative)
    or a bare ``(x1, y1, x2, y2)`` box (positive), XYXY in pixels of the original image.

    Raises:
        InvalidInputError: malformed box or label, ``x2 <= x1`` / ``y2 <= y1``, non-finite values, too many.
    """
    rows: list[list[float]] = []
    for index, item in enumerate(_listed(exemplars, "exemplars")):
        if isinstance(item, Mapping):
            unknown = set(item) - {"box", "label"}
            if unknown:
                raise InvalidInputError(f"exemplar {index}: unknown key(s) {sorted(unknown)}; use box and label")
            box, label = item.get("box"), item.get("label", 1)
        else:
            box, label = item, 1
        try:
            values = [float(v) for v in box]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InvalidInputError(f"exemplar {index}: box must be four numbers (x1, y1, x2, y2)") from None
        if len(values) != 4 or not all(math.isfinite(v) and abs(v) <= _FLOAT32_MAX for v in values):
            raise InvalidInputError(f"exemplar {index}: box must be four finite numbers (x1, y1, x2, y2)")
        if values[2] <= values[0] or values[3] <= values[1]:
            raise InvalidInputError(f"exemplar {index}: box needs x2 > x1 and y2 > y1, got {values}")
        if label not in (0, 1) or isinstance(label, float):
            raise InvalidInputError(f"exemplar {index}: label must be 1 (positive) or 0 (negative), got {label!r}")
        rows.append([*values, float(label)])
    if len(rows) > MAX_EXEMPLARS:
        raise InvalidInputError(f"at most {MAX_EXEMPLARS} exemplars per request, got {len(rows)}")
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


@dataclass(frozen=True)
class ConceptRequest:
    """Segment every instance of each phrase on one image (SAM 3).

    Attributes:
        image: an image source the input policy accepts, or an ``embed()`` handle.
        texts: one or more noun phrases (``"red car"``); each gives its own instances, labelled with the phrase.
            May be empty when ``exemplars`` are given (Meta then uses the phrase ``"visual"``).
        exemplars: see :func:`parse_exemplars`; used with every phrase.
        threshold: keep instances whose score (class probability × presence probability) is above this, in [0, 1).
        output_formats: as for :class:`~perceptra_seg.requests.SegmentRequest`.
        request_id: as for :class:`~perceptra_seg.requests.SegmentRequest`.

    Raises:
        InvalidInputError: no phrase and no exemplar, an empty or over-long phrase, too many phrases, a bad
            threshold, exemplar or output format.
    """

    image: Any
    texts: tuple[str, ...] = ()
    exemplars: Any = None
    threshold: float = 0.5
    output_formats: tuple[OutputFormat, ...] | None = None
    request_id: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        texts = _listed(self.texts, "texts")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError("every text prompt must be a non-empty phrase")
            if len(text) > MAX_PHRASE_CHARS:
                raise InvalidInputError(f"a text prompt may have at most {MAX_PHRASE_CHARS} characters")
        if len(texts) > MAX_PHRASES:
            raise InvalidInputError(f"at most {MAX_PHRASES} phrases per request, got {len(texts)}")
        exemplars = parse_exemplars(self.exemplars)
        if not texts and len(exemplars) == 0:
            raise InvalidInputError("give a text prompt, exemplar boxes, or both")
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise InvalidInputError(f"threshold must be a number in [0, 1), got {threshold!r}")
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "exemplars", exemplars)
        if self.output_formats is not None:
            formats = _listed(self.output_formats, "output_formats")
            object.__setattr__(self, "output_formats", validate_formats(formats))

    def call_id(self) -> str:
        """``request_id``, or a new random one (32 hex digits)."""
        return self.request_id or uuid.uuid4().hex
