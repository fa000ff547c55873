"""How an :class:`~perceptra_seg.requests.AutoMaskRequest` runs on a Segmentor: decode the image once, encode the
whole image and each crop through the embedding cache, generate, encode the kept masks.

Called by :meth:`Segmentor.run <perceptra_seg.Segmentor.run>` while it holds the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..backends.base import ImageEmbedding
from ..cancel import CancelToken
from ..exceptions import InvalidInputError
from ..models import EmbeddedImage
from ..requests import AutoMaskRequest
from ..results import CallInfo, ResultSet
from ..timings import StageClock
from ..utils.masks import resolve_formats
from ..utils.tiling import Window
from .generator import generate_masks
from .grids import CropBox
from .options import auto_options
from .results import to_results

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = ["execute_automatic"]


class _Regions:
    """Embeddings of the image regions the generator asks for: the whole image, then each crop (cached)."""

    def __init__(self, seg: Segmentor, pixels: np.ndarray, clock: StageClock) -> None:
        self.seg, self.pixels, self.clock = seg, pixels, clock
        self.digest = seg.digest(pixels)

    def __call__(self, box: CropBox) -> ImageEmbedding:
        height, width = self.pixels.shape[:2]
        if box == (0, 0, width, height):
            return self.seg.embedding(self.pixels, self.digest, self.clock)
        x0, y0, x1, y1 = box
        crop = np.ascontiguousarray(self.pixels[y0:y1, x0:x1])
        return self.seg.embedding(crop, self.digest, self.clock, Window(x0, y0, x1, y1, ()))


class _Handle:
    """The one region of an embedded handle: the whole image."""

    def __init__(self, embedding: ImageEmbedding) -> None:
        self.embedding = embedding

    def __call__(self, box: CropBox) -> ImageEmbedding:
        return self.embedding


def execute_automatic(seg: Segmentor, request: AutoMaskRequest, cancel: CancelToken | None) -> ResultSet:
    """Run ``request`` on ``seg`` (see :meth:`Segmentor.generate <perceptra_seg.Segmentor.generate>`).

    Raises:
        InvalidInputError: a bad option value, or crop layers asked of an embedded handle.
        NotFoundError: an embedded handle that is no longer cached.
        OperationCancelledError: ``cancel`` was set (checked before every crop, decoder call and mask).
    """
    clock = StageClock()
    backend = seg.backend
    settings = auto_options(backend.family, **request.options)
    formats = resolve_formats(request.output_formats, seg.config.outputs)
    regions: _Regions | _Handle
    if isinstance(request.image, EmbeddedImage):
        if settings.crop_n_layers:
            raise InvalidInputError("crop_n_layers > 0 needs the image itself, not an embedded image id")
        size = (request.image.height, request.image.width)
        regions = _Handle(seg.embedded(request.image))
    else:
        pixels = seg.load(request.image, clock)
        size = (int(pixels.shape[0]), int(pixels.shape[1]))
        regions = _Regions(seg, pixels, clock)
    request_id = request.call_id()
    model_info = backend.info()
    masks = generate_masks(backend, size, settings, regions, cancel)
    results = to_results(masks, size, formats, seg.config.outputs, model_info, request_id=request_id, cancel=cancel)
    info = CallInfo.finish(request_id, model_info, clock)
    for result in results:
        result.latency_ms = info.latency_ms
    return ResultSet(results, info, size)
