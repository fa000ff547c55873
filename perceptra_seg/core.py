"""``Segmentor``: the one object users hold. Orchestration only; each step lives in its own module."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, overload

import numpy as np

from .backends import Backend, ImageEmbedding, create_backend, require_backend
from .batching import BatchEncoder, batcher_for
from .cancel import CancelToken, check
from .concepts.api import segment_text as _segment_text
from .concepts.execute import execute_concepts, warm_up_concepts
from .concepts.request import ConceptRequest
from .config import SegmentorConfig
from .decoding import Strategy
from .deferred import execute_automatic_request
from .deferred import open_video as _open_video
from .deferred import track as _track
from .exceptions import ConfigError, InvalidInputError, NotFoundError
from .execution import execute_segment
from .inputs import InputPolicy
from .lifecycle import BackendSlot, holds_backend
from .models import BBox, EmbeddedImage, Point, Prompt, SegmentationResult
from .prompts import build_batches
from .requests import AutoMaskRequest, EmbedRequest, SegmentorRequest, SegmentRequest
from .results import CallInfo, EmbedResult, ResultSet
from .timings import StageClock
from .utils.cache import CacheStats, EmbeddingCache
from .utils.image_io import image_digest
from .utils.tiling import Window

__all__ = ["Segmentor"]

logger = logging.getLogger(__name__)


class Segmentor:
    """Segment Anything behind a small API: one image encoding, any number of prompts.

    Example::

        seg = Segmentor(model="sam_v1", device="cpu", checkpoint_path="sam_vit_b_01ec64.pth")
        r = seg.segment_from_box(image, box=(100, 100, 400, 400), output_formats=["numpy", "rle"])

    Args:
        config: a :class:`SegmentorConfig`, a path to a YAML file, a dict of sections, or ``None`` (defaults and
            ``SEGMENTOR_*`` environment variables).
        backend: backend name (``"torch"``) or a ready :class:`~perceptra_seg.backends.Backend` instance.
        model, variant, device, precision, checkpoint_path: shortcuts for the config fields of the same name;
            they override the file and the environment.
        encoder_variant: the original README's name of ``variant`` (``vit_h | vit_l | vit_b``); giving both with
            different values is a :class:`~perceptra_seg.exceptions.ConfigError`.
        input_policy: which image sources are accepted and the decode limits (default: from the ``input`` config
            section, every source kind allowed); see :class:`~perceptra_seg.inputs.InputPolicy`.

    Every call is one typed request executed by :meth:`run`; ``segment*`` and ``embed`` build that request.

    Thread safety: ``run``, ``segment*``, ``embed``, ``warmup`` and ``cache_stats`` may be called from several
    threads at once; concurrent requests for the same image encode it once. ``set_backend`` and ``close`` may run
    meanwhile: each running call keeps the backend it started with until it returns, and a replaced or closed
    backend is closed when its last call finishes (see :mod:`perceptra_seg.lifecycle`). A call that starts after
    ``close()`` fails with :class:`~perceptra_seg.exceptions.BackendError` once it needs the model. Configuration
    read by a call (postprocess, outputs) is the one current when it reads it: ``set_backend`` swaps ``config`` too.
    """

    def __init__(
        self,
        config: SegmentorConfig | str | Path | Mapping[str, Any] | None = None,
        *,
        backend: str | Backend | None = None,
        model: str | None = None,
        variant: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        checkpoint_path: str | Path | None = None,
        encoder_variant: str | None = None,
        input_policy: InputPolicy | None = None,
    ) -> None:
        self.config = SegmentorConfig.resolve(
            config,
            backend=backend if isinstance(backend, str) else None,
            model=model,
            variant=variant,
            device=device,
            precision=precision,
            checkpoint_path=checkpoint_path,
            encoder_variant=encoder_variant,
        )
        named = backend is None or isinstance(backend, str)
        self._slot = BackendSlot(create_backend(self.config) if named else require_backend(backend))
        self._batcher = batcher_for(self.config, self._slot.active())
        self._cache: EmbeddingCache[ImageEmbedding] = EmbeddingCache(self.config.cache.max_bytes)
        self._lock = threading.Lock()
        self.encoder_calls = 0
        self.input_policy = input_policy or InputPolicy.from_config(self.config.input)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Segmentor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop cached embeddings and release the backend's models (after the calls still running on it)."""
        self._cache.clear()
        self._slot.close()
        self.__dict__.pop("_video_model", None)  # the tracking model (perceptra_seg.video.api), if loaded
        self.__dict__.pop("_concept_tracker", None)  # SAM 3's video model (perceptra_seg.video.sam3_tracking)

    def set_backend(self, name: str) -> None:
        """Switch runtime (e.g. ``"torch"``); the model is loaded anew and cached embeddings are dropped."""
        config = SegmentorConfig.resolve(self.config, backend=name)
        new_backend = create_backend(config)
        try:
            batcher = batcher_for(config, new_backend)
        except ConfigError:
            new_backend.close()
            raise
        self._batcher = batcher
        self._slot.replace(new_backend)  # the old one closes after the calls still using it
        self.config = config
        self._cache.clear()

    @holds_backend
    def warmup(self, image_size: tuple[int, int] = (1024, 1024)) -> float:
        """Run the encoder and decoder once on a blank ``(H, W)`` image (not cached); returns the seconds taken.

        The decoder answers one box covering the image. SAM 3 runs one detector pass (a concept prompt) first, then
        the box through its tracker head when the checkpoint has one (without tracker weights: the detector only).
        """
        start = time.perf_counter()
        height, width = image_size
        image = np.zeros((height, width, 3), dtype=np.uint8)
        embedding = self._backend.encode(image)
        if self._backend.family == "sam3":  # a concept model: one detector pass, then the box if it answers boxes
            warm_up_concepts(self._backend, embedding)
            try:
                self._backend.check_prompts()
            except InvalidInputError:  # no tracker weights: text and exemplar prompts only
                return time.perf_counter() - start
        prompt = [Prompt(box=(0.0, 0.0, float(width), float(height)))]
        for _, batch in build_batches(prompt, (height, width), self._backend.family):
            self._backend.decode(embedding, batch, multimask=False)
        return time.perf_counter() - start

    @property
    def backend(self) -> Backend:
        """The backend calls in this thread use (the current one outside a call)."""
        return self._slot.active()

    @property
    def _backend(self) -> Backend:
        return self._slot.active()

    def cache_stats(self) -> CacheStats:
        """Hit/miss/eviction counters and current size of the embedding cache."""
        return self._cache.stats()

    # ------------------------------------------------------------------ the seam: one request in, one result out

    @overload
    def run(self, request: SegmentRequest, *, cancel: CancelToken | None = None) -> ResultSet: ...

    @overload
    def run(self, request: EmbedRequest, *, cancel: CancelToken | None = None) -> EmbedResult: ...

    @overload
    def run(self, request: AutoMaskRequest, *, cancel: CancelToken | None = None) -> ResultSet: ...

    @overload
    def run(self, request: ConceptRequest, *, cancel: CancelToken | None = None) -> ResultSet: ...

    def run(
        self, request: SegmentorRequest | ConceptRequest, *, cancel: CancelToken | None = None
    ) -> ResultSet | EmbedResult:
        """Execute one request; every public method and every front end (REST, CLI) goes through here.

        Args:
            request: a :class:`~perceptra_seg.requests.SegmentRequest`,
                :class:`~perceptra_seg.requests.AutoMaskRequest` or :class:`~perceptra_seg.requests.EmbedRequest`.
            cancel: a :class:`~perceptra_seg.cancel.CancelToken` another thread may set; checked after decoding the
                image, after the encoder, between decoder batches and for every mask.

        Returns:
            :class:`~perceptra_seg.results.ResultSet` for a segment or automatic-mask request,
            :class:`~perceptra_seg.results.EmbedResult` for an embed request; both carry the call's
            :class:`~perceptra_seg.results.CallInfo` (request id, stage timings, model info).

        Raises:
            OperationCancelledError: ``cancel`` was set.
        """
        with self._slot.lease():  # the backend stays this call's until it returns (see perceptra_seg.lifecycle)
            if isinstance(request, SegmentRequest):
                return execute_segment(self, request, cancel)
            if isinstance(request, AutoMaskRequest):
                return execute_automatic_request(self, request, cancel)
            if isinstance(request, EmbedRequest):
                return self._run_embed(request, cancel)
            if isinstance(request, ConceptRequest):
                return execute_concepts(self, request, cancel)
        raise InvalidInputError(f"Segmentor.run does not know requests of type {type(request).__name__}")

    def embed(self, image: Any, *, cancel: CancelToken | None = None) -> EmbeddedImage:
        """Decode and encode ``image`` now and keep its embedding cached; prompts sent later with the returned
        handle cost only the decoder.

        Raises:
            ConfigError: the embedding cache is disabled (``cache.enabled = false``), or one embedding of this
                image is larger than ``cache.max_bytes`` so the cache cannot keep it (a handle would only ever
                answer :class:`~perceptra_seg.exceptions.NotFoundError`); the REST service answers 400
                ``invalid_config`` for both.
            OperationCancelledError: ``cancel`` was set before the encoder started.
        """
        return self.run(EmbedRequest(image), cancel=cancel).handle

    def segment_from_box(
        self,
        image: Any,
        box: BBox | Sequence[float],
        *,
        output_formats: Sequence[str] | None = None,
        multimask: bool = False,
        mask_input: np.ndarray | None = None,
        return_overlay: bool = False,
        min_score: float | None = None,
        min_stability: float | None = None,
        cancel: CancelToken | None = None,
    ) -> SegmentationResult:
        """Segment the object inside one ``(x1, y1, x2, y2)`` box; with ``multimask`` the best of 3 masks."""
        request = SegmentRequest.build(
            image,
            [{"box": box, "mask_input": mask_input}],
            strategy="best",
            output_formats=output_formats,
            multimask=multimask,
            return_overlay=return_overlay,
            min_score=min_score,
            min_stability=min_stability,
        )
        return self.run(request, cancel=cancel).only()

    def segment_from_points(
        self,
        image: Any,
        points: Sequence[Point] | Sequence[Sequence[float]],
        *,
        output_formats: Sequence[str] | None = None,
        multimask: bool = False,
        mask_input: np.ndarray | None = None,
        return_overlay: bool = False,
        min_score: float | None = None,
        min_stability: float | None = None,
        cancel: CancelToken | None = None,
    ) -> SegmentationResult:
        """Segment one object from ``(x, y, label)`` clicks (1 = foreground, 0 = background)."""
        request = SegmentRequest.build(
            image,
            [{"points": list(points), "mask_input": mask_input}],
            strategy="best",
            output_formats=output_formats,
            multimask=multimask,
            return_overlay=return_overlay,
            min_score=min_score,
            min_stability=min_stability,
        )
        return self.run(request, cancel=cancel).only()

    def segment(
        self,
        image: Any,
        prompts: Iterable[Prompt | Mapping[str, Any]] | None = None,
        boxes: Any = None,
        points: Any = None,
        *,
        strategy: Strategy = "all",
        output_formats: Sequence[str] | None = None,
        multimask: bool = False,
        return_overlay: bool = False,
        min_score: float | None = None,
        min_stability: float | None = None,
        cancel: CancelToken | None = None,
    ) -> ResultSet:
        """Segment every prompt on one image with one encoder pass and decoder calls of at most
        ``runtime.batch_size`` prompts of one shape (see :class:`~perceptra_seg.requests.SegmentRequest` for the
        arguments).

        Args:
            image: numpy ``[H, W]``/``[H, W, 3]``/``[H, W, 4]`` array, PIL image, path, bytes, base64 or URL
                (as the :class:`~perceptra_seg.inputs.InputPolicy` allows), or an ``embed()`` handle.
            prompts: ``[{"box": (x1, y1, x2, y2), "points": [(x, y, label), ...], "mask_input": logits}, ...]``.
            boxes: flat form; each ``(x1, y1, x2, y2)`` box is its own prompt.
            points: flat form; all ``(x, y, label)`` points together are one prompt.
            strategy: ``all`` (one result per mask), ``best`` (the highest score), ``largest`` (the most pixels) or
                ``merge`` (the union of every mask, scored with the best score, ``prompt_index`` -1).
            output_formats: any of ``numpy``, ``rle``, ``png``, ``polygons``; default ``outputs.formats``.
            multimask: 3 masks per prompt instead of 1.
            return_overlay: attach a PNG of the image with the masks drawn.
            min_score, min_stability: drop masks whose predicted IoU / stability score is below these (before the
                strategy); ``None`` = ``postprocess.min_score`` / ``postprocess.min_stability`` (0 = keep all).
            cancel: see :meth:`run`.

        Returns:
            A :class:`~perceptra_seg.results.ResultSet`: the results in prompt order (``multimask``: 3 per prompt,
            in the decoder's order; see ``score``) plus the call's metadata.

        Raises:
            OperationCancelledError: ``cancel`` was set.
        """
        request = SegmentRequest.build(
            image,
            prompts,
            boxes=boxes,
            points=points,
            strategy=strategy,
            output_formats=output_formats,
            multimask=multimask,
            return_overlay=return_overlay,
            min_score=min_score,
            min_stability=min_stability,
        )
        return self.run(request, cancel=cancel)

    def generate(
        self,
        image: Any,
        *,
        output_formats: Sequence[str] | None = None,
        cancel: CancelToken | None = None,
        **options: Any,
    ) -> ResultSet:
        """Segment everything: Meta's automatic mask generator over this model (see ``docs/automatic.md``).

        ``options`` are named as in Meta's generators (``points_per_side``, ``pred_iou_thresh``,
        ``stability_score_thresh``, ``crop_n_layers``, ``use_m2m``, ...; :class:`~perceptra_seg.automatic.AutoOptions`);
        defaults follow the model family's generator. ``image`` may be an :meth:`embed` handle when
        ``crop_n_layers`` is 0. Results carry ``score`` (predicted IoU), ``stability_score``, ``point_coords``,
        ``crop_box``, ``area``, ``bbox`` and the formats; ``prompt_index`` numbers them.
        """
        formats = None if output_formats is None else tuple(output_formats)
        return self.run(AutoMaskRequest(image, options, formats), cancel=cancel)  # type: ignore[arg-type]

    # Concept segmentation (SAM 3), implemented in perceptra_seg.concepts.
    segment_text = _segment_text

    # Video tracking (SAM 2 / 2.1), implemented in perceptra_seg.video and imported on first call.
    open_video = _open_video
    track = _track

    def _run_embed(self, request: EmbedRequest, cancel: CancelToken | None) -> EmbedResult:
        if not self.config.cache.enabled:
            raise ConfigError("embed() needs the embedding cache (cache.enabled = true)")
        clock = StageClock()
        pixels = self.load(request.image, clock)
        check(cancel)
        key = self._cache_key(image_digest(pixels))
        embedding, _ = self._cache.get_or_compute(key, partial(self.encode, pixels, clock, cancel))
        if embedding.nbytes > self._cache.max_bytes:
            raise ConfigError(
                f"embed() cannot keep this image: its embedding takes {embedding.nbytes} bytes, more than the "
                f"whole embedding cache (cache.max_bytes = {self._cache.max_bytes})"
            )
        handle = EmbeddedImage(image_id=key, width=int(pixels.shape[1]), height=int(pixels.shape[0]))
        return EmbedResult(handle, CallInfo.finish(request.call_id(), self._backend.info(), clock, outputs=False))

    # ------------------------------------------------------------------ steps (used by perceptra_seg.execution)

    def load(self, image: Any, clock: StageClock) -> np.ndarray:
        """Decode ``image`` under :attr:`input_policy` (the one decode of a call), timed as ``decode_image``."""
        with clock.stage("decode_image"):
            return self.input_policy.load(image)

    def encode(self, pixels: np.ndarray, clock: StageClock, cancel: CancelToken | None = None) -> ImageEmbedding:
        """Run the image encoder on ``pixels`` (RGB ``uint8`` ``[H, W, 3]``), timed as ``encode``; with
        ``runtime.max_batch_size`` > 1 in one batch with concurrent calls (:mod:`perceptra_seg.batching`), the wait
        for the batch included. ``cancel`` stops a wait for a batch."""
        with self._lock:
            self.encoder_calls += 1
        with clock.stage("encode"):
            backend = self._backend
            batcher = self._batcher
            if batcher is not None and isinstance(backend, BatchEncoder):
                return batcher.encode(backend, pixels, cancel)
            return backend.encode(pixels)

    def embedding(
        self,
        pixels: np.ndarray,
        digest: str | None,
        clock: StageClock,
        window: Window | None = None,
        cancel: CancelToken | None = None,
    ) -> ImageEmbedding:
        """``pixels`` encoded, through the cache when ``digest`` is given (see :meth:`digest`)."""
        if digest is None:
            return self.encode(pixels, clock, cancel)
        key = self._cache_key(digest, window)
        embedding, _ = self._cache.get_or_compute(key, partial(self.encode, pixels, clock, cancel))
        return embedding

    def embedded(self, handle: EmbeddedImage) -> ImageEmbedding:
        """The cached embedding of an :meth:`embed` handle.

        Raises:
            NotFoundError: evicted or never stored (404 in the service).
        """
        embedding = self._cache.get(handle.image_id)
        if embedding is None:
            raise NotFoundError("embedded image not found or evicted from the cache; embed the image again")
        return embedding

    def adopt(self, image_id: str, embedding: ImageEmbedding) -> None:
        """Cache ``embedding``, made by this same model elsewhere (another worker of the service), under the
        :meth:`embed` handle id ``image_id``, so handles with that id work here too (the caller checks the model)."""
        self._cache.get_or_compute(image_id, lambda: embedding)

    def digest(self, pixels: np.ndarray) -> str | None:
        """The full-image SHA-256 the cache keys on, or ``None`` when the cache is off (nothing would use it)."""
        return image_digest(pixels) if self.config.cache.enabled else None

    def _cache_key(self, digest: str, window: Window | None = None) -> str:
        """Model fingerprint + pixel digest (+ the window's bounds when tiling)."""
        key = f"{self._backend.fingerprint}|{digest}"
        return key if window is None else f"{key}|{window.x0},{window.y0},{window.x1},{window.y1}"
