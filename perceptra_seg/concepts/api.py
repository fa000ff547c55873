"""``Segmentor.segment_text``: the SDK call of concept segmentation (SAM 3), bound onto the class in ``core.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..cancel import CancelToken
from ..results import ResultSet
from .request import ConceptRequest

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = ["segment_text"]


def segment_text(
    self: Segmentor,
    image: Any,
    text: str | Sequence[str] | None = None,
    *,
    exemplars: Sequence[Any] | None = None,
    threshold: float = 0.5,
    output_formats: Sequence[str] | None = None,
    cancel: CancelToken | None = None,
) -> ResultSet:
    """Segment every instance of a concept (model ``sam3``): a noun phrase, exemplar boxes, or both.

    Args:
        image: as for :meth:`~perceptra_seg.Segmentor.segment`, or an :meth:`~perceptra_seg.Segmentor.embed`
            handle (phrases sent later reuse the encoding).
        text: one phrase (``"red car"``) or several; each phrase's instances carry it as ``label`` and its
            index as ``prompt_index``. ``None`` with exemplars: the exemplars alone define the concept.
        exemplars: boxes ``(x1, y1, x2, y2)`` in pixels of the image (positive), or ``{"box": (...), "label":
            1 | 0}`` (0 = a negative exemplar); used with every phrase.
        threshold: keep instances scoring above this (SAM 3's score: class × presence probability).
        output_formats: any of ``numpy``, ``rle``, ``png``, ``polygons``; default ``outputs.formats``.
        cancel: see :meth:`~perceptra_seg.Segmentor.run`.

    Returns:
        A :class:`~perceptra_seg.results.ResultSet`: per phrase, its instances by descending score.

    Raises:
        InvalidInputError: empty phrase, too many phrases, bad exemplar or threshold; a model other than
            ``sam3`` (code ``text_prompts_unsupported``).
    """
    # ConceptRequest turns None / one phrase / a list into its tuples and refuses anything else
    request = ConceptRequest(image, text, exemplars, threshold, output_formats)  # type: ignore[arg-type]
    return self.run(request, cancel=cancel)
