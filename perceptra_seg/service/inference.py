"""The service's inference pipeline: decode the request's image, call the SDK, shape the response, time each stage.

Everything here is blocking and runs on the :class:`~perceptra_seg.service.limits.InferenceRunner`'s threads.
Image URLs are never fetched here: :class:`~perceptra_seg.service.url_fetch.UrlFetcher` downloads them before the
request is admitted, and their bytes are decoded here like an upload. Every call takes the request's
:class:`~perceptra_seg.cancel.CancelToken` and hands it to the SDK.

Stages (``segmentor_inference_stage_seconds{stage}``):

* ``fetch_image`` — download of an image URL (before admission, outside the inference slot);
* ``decode_image`` — base64 / upload / downloaded bytes → RGB pixels (absent for ``image_id`` requests);
* ``encode`` — the image encoder (absent on an embedding-cache hit);
* ``decode_masks`` — prompt encoder + mask decoder;
* ``outputs`` — the rest: upsampling, thresholding, post-processing, RLE/PNG/polygon encoding, JSON shaping.

``encode`` and ``decode_masks`` are measured by :class:`TimedBackend`, a proxy around the real backend that adds
its timings to the record of the thread that called it, so the numbers are exact even with concurrent requests.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import Backend, DecoderOutput, ImageEmbedding, PromptBatch
from ..cancel import CancelToken
from ..config import SegmentorConfig
from ..core import Segmentor
from ..models import EmbeddedImage, SegmentationResult
from ..utils.image_io import load_image
from .image_ids import ImageIdRegistry
from .url_fetch import is_url, parse_image_url

__all__ = ["InferenceService", "Outcome", "TimedBackend"]

#: A request's image: base64/data-URI text, uploaded or downloaded bytes, or an embedded image handle.
Source = str | bytes | EmbeddedImage
#: ``call(segmentor, image_or_handle, formats, cancel)``: one SDK call bound to the request's prompts.
SegmentCall = Callable[[Segmentor, Any, list[str], CancelToken], list[SegmentationResult]]


class _Record(threading.local):
    stages: dict[str, float] | None = None


_RECORD = _Record()


def _add_stage(stage: str, seconds: float) -> None:
    stages = _RECORD.stages
    if stages is not None:
        stages[stage] = stages.get(stage, 0.0) + seconds


@contextlib.contextmanager
def _recording(stages: dict[str, float]) -> Iterator[None]:
    previous, _RECORD.stages = _RECORD.stages, stages
    try:
        yield
    finally:
        _RECORD.stages = previous


class TimedBackend:
    """A :class:`~perceptra_seg.backends.Backend` proxy that times ``encode`` and ``decode``.

    Args:
        inner: the real backend.
        owned: whether :meth:`close` closes ``inner`` (``False`` for a backend the caller passed in and keeps).
    """

    def __init__(self, inner: Backend, *, owned: bool) -> None:
        self.inner = inner
        self.family = inner.family
        self.fingerprint = inner.fingerprint
        self.mask_size = inner.mask_size
        self._owned = owned

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        start = time.perf_counter()
        try:
            return self.inner.encode(image)
        finally:
            _add_stage("encode", time.perf_counter() - start)

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        start = time.perf_counter()
        try:
            return self.inner.decode(embedding, batch, multimask=multimask)
        finally:
            _add_stage("decode_masks", time.perf_counter() - start)

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def close(self) -> None:
        if self._owned:
            self.inner.close()


@dataclass
class Outcome:
    """What a route needs to answer: response fields plus what goes into logs and metrics."""

    body: dict[str, Any]
    prompts: int
    cache_hit: bool
    stages: dict[str, float] = field(default_factory=dict)


def mask_result(result: SegmentationResult) -> dict[str, Any]:
    """The JSON fields of one mask (only the encodings that were computed)."""
    out: dict[str, Any] = {
        "score": result.score,
        "area": result.area,
        "bbox": [int(v) for v in result.bbox],
        "prompt_index": result.prompt_index,
    }
    if result.rle is not None:
        out["rle"] = result.rle
    if result.png_bytes is not None:
        out["png_base64"] = base64.b64encode(result.png_bytes).decode("ascii")
    if result.polygons is not None:
        out["polygons"] = result.polygons
    return out


def _as_image_text(text: str) -> str:
    """Keep data: URIs and http(s) URLs; wrap anything else as base64 so it is never taken for a server path."""
    head = text[:8].lower()
    if head.startswith(("data:", "http://", "https://")):
        return text
    return "data:application/octet-stream;base64," + text


class InferenceService:
    """Runs embed/segment requests against one :class:`Segmentor` (blocking; call from worker threads).

    Args:
        segmentor: the loaded Segmentor (built over a :class:`TimedBackend`).
        config: the effective configuration (input limits, default output formats).
        ids: the registry that scopes public image ids to API keys.
    """

    def __init__(self, segmentor: Segmentor, *, config: SegmentorConfig, ids: ImageIdRegistry) -> None:
        self.segmentor = segmentor
        self.config = config
        self.ids = ids
        configured = [f for f in config.outputs.formats if f != "numpy"]
        self.default_formats = configured or ["rle"]

    def load_pixels(self, source: str | bytes) -> np.ndarray:
        """Decode an image from request text (base64, data: URI) or uploaded / downloaded bytes.

        A server-side path is never opened: text that is not a data: URI is read as base64. URL text is never
        fetched here (that happens before admission): a malformed URL is 400 ``invalid_input``, any other URL means
        URL images are disabled (400).
        """
        if isinstance(source, str) and is_url(source):
            parse_image_url(source)
        limits = self.config.input
        return load_image(
            _as_image_text(source) if isinstance(source, str) else source,
            max_pixels=limits.max_pixels,
            max_bytes=limits.max_bytes,
            max_decode_bytes=limits.max_decode_bytes,
            allow_urls=False,
        )

    def embed(self, source: str | bytes, scope: str, cancel: CancelToken) -> Outcome:
        """Decode and encode the image, keep its embedding, and return ``{image_id, width, height}``."""
        stages: dict[str, float] = {}
        with _recording(stages):
            start = time.perf_counter()
            pixels = self.load_pixels(source)
            stages["decode_image"] = time.perf_counter() - start
            handle = self.segmentor.embed(pixels, cancel=cancel)
        body = {
            "image_id": self.ids.public_id(scope, handle),
            "width": handle.width,
            "height": handle.height,
            "latency_ms": (time.perf_counter() - start) * 1000.0,
        }
        return Outcome(body=body, prompts=0, cache_hit="encode" not in stages, stages=stages)

    def formats(self, output_formats: Sequence[str] | None) -> list[str]:
        """The request's output formats, or the configured defaults for ``None``."""
        return self.default_formats if output_formats is None else list(output_formats)

    def segment(
        self,
        source: Source,
        call: SegmentCall,
        output_formats: Sequence[str] | None,
        *,
        prompts: int,
        single: bool,
        cancel: CancelToken,
    ) -> Outcome:
        """Run ``call(segmentor, image_or_handle, formats)`` and shape its results.

        Args:
            source: request image or embedded handle.
            call: the SDK call (``segment_from_box`` etc. bound to the request's prompts).
            output_formats: the request's formats, or ``None`` for the defaults.
            prompts: number of prompts, for the log line.
            single: answer one mask at the top level (box/points endpoints) instead of ``results``.
            cancel: the request's token, handed to ``call``.
        """
        formats = self.formats(output_formats)
        stages: dict[str, float] = {}
        start = time.perf_counter()
        with _recording(stages):
            if isinstance(source, EmbeddedImage):
                target: Any = source
            else:
                target = self.load_pixels(source)
                stages["decode_image"] = time.perf_counter() - start
            model_start = time.perf_counter()
            results = call(self.segmentor, target, formats, cancel)
            model_seconds = time.perf_counter() - model_start
        shaping_start = time.perf_counter()
        masks = [mask_result(r) for r in results]
        info = self.segmentor.backend.info()
        inner = stages.get("encode", 0.0) + stages.get("decode_masks", 0.0)
        stages["outputs"] = max(0.0, model_seconds - inner) + (time.perf_counter() - shaping_start)
        latency_ms = (time.perf_counter() - start) * 1000.0
        body: dict[str, Any] = {"latency_ms": latency_ms, "model_info": info}
        if single:
            body.update(masks[0])
        else:
            body["results"] = masks
        return Outcome(body=body, prompts=prompts, cache_hit="encode" not in stages, stages=stages)
