"""How a :class:`~perceptra_seg.concepts.request.ConceptRequest` runs: decode the image once, encode it once (through
the embedding cache, or an ``embed()`` handle), then one detector pass per phrase; instances above the threshold
become :class:`~perceptra_seg.models.SegmentationResult` s labelled with their phrase.

Masks follow Meta's ``Sam3Processor``: the low-resolution logits of each kept instance are resized bilinearly to the
image size, *then* passed through a sigmoid and thresholded at 0.5. Results are ordered by phrase, then by
descending score; ``prompt_index`` is the phrase's index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..cancel import CancelToken, check
from ..models import EmbeddedImage, SegmentationResult
from ..results import CallInfo, ResultSet
from ..timings import StageClock
from ..utils.masks import encode_outputs, mask_area, mask_bbox, resolve_formats
from .request import ConceptRequest, TextPromptsUnsupportedError, check_exemplars_inside

if TYPE_CHECKING:
    import torch

    from ..backends.base import ImageEmbedding
    from ..core import Segmentor

__all__ = ["VISUAL_PHRASE", "execute_concepts", "instance_masks", "warm_up_concepts"]

#: The phrase Meta's processor sends when only exemplar boxes are given.
VISUAL_PHRASE = "visual"


def instance_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """bool ``[K, H, W]``: logits ``[K, h, w]`` resized (bilinear, ``align_corners=False``) then sigmoid > 0.5."""
    import torch.nn.functional as F  # torch only once a SAM 3 model runs (``import perceptra_seg`` stays light)

    if mask_logits.shape[0] == 0:
        return np.zeros((0, *size), dtype=bool)
    resized = F.interpolate(mask_logits[:, None].float(), size=size, mode="bilinear", align_corners=False)
    return (resized[:, 0].sigmoid() > 0.5).cpu().numpy()


def warm_up_concepts(backend: Any, embedding: ImageEmbedding) -> None:
    """One detector pass (the exemplar-free phrase Meta uses, :data:`VISUAL_PHRASE`) on an encoded image."""
    backend.detect(embedding, VISUAL_PHRASE, np.zeros((0, 5), dtype=np.float32))


def _backend(seg: Segmentor) -> Any:
    backend = seg.backend
    if not callable(getattr(backend, "detect", None)):
        raise TextPromptsUnsupportedError(
            f"model {seg.config.model.name!r} has no text prompts; segment_text needs model 'sam3'"
        )
    return backend


def execute_concepts(seg: Segmentor, request: ConceptRequest, cancel: CancelToken | None) -> ResultSet:
    """Run ``request`` on ``seg`` (see :meth:`Segmentor.segment_text <perceptra_seg.Segmentor.segment_text>`).

    Raises:
        InvalidInputError: the model has no text prompts, a bad image or exemplar outside the image.
        NotFoundError: an embedded handle that is no longer cached.
        OperationCancelledError: ``cancel`` was set.
    """
    import torch

    backend = _backend(seg)
    clock = StageClock()
    formats = resolve_formats(request.output_formats, seg.config.outputs)
    embedding: ImageEmbedding
    if isinstance(request.image, EmbeddedImage):
        embedding = seg.embedded(request.image)
    else:
        pixels = seg.load(request.image, clock)
        check(cancel)
        embedding = seg.embedding(pixels, seg.digest(pixels), clock)
    height, width = (int(v) for v in embedding.original_size)
    exemplars: np.ndarray = request.exemplars
    check_exemplars_inside(exemplars, width, height)
    phrases: tuple[str | None, ...] = request.texts or (None,)
    request_id = request.call_id()
    model_info = backend.info()
    results: list[SegmentationResult] = []
    for index, phrase in enumerate(phrases):
        check(cancel)
        with clock.stage("decode_masks"):
            found = backend.detect(embedding, phrase or VISUAL_PHRASE, exemplars)
            keep = torch.nonzero(found.scores > request.threshold).flatten()
            keep = keep[torch.argsort(found.scores[keep], descending=True, stable=True)]
            masks = instance_masks(found.mask_logits[keep], (height, width))
            scores = found.scores[keep].cpu().tolist()
        for mask, score in zip(masks, scores, strict=True):
            check(cancel)
            results.append(
                SegmentationResult(
                    score=float(score),
                    area=mask_area(mask),
                    bbox=mask_bbox(mask),
                    model_info=model_info,
                    request_id=request_id,
                    prompt_index=index,
                    label=phrase,
                    **encode_outputs(mask, formats, seg.config.outputs),
                )
            )
    info = CallInfo.finish(request_id, model_info, clock)
    for result in results:
        result.latency_ms = info.latency_ms
    return ResultSet(results, info, (height, width))
