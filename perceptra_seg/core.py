"""``Segmentor``: the one object users hold. Orchestration only; each step lives in its own module."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .automatic import auto_options, generate_masks, to_results
from .backends import Backend, ImageEmbedding, create_backend
from .cancel import CancelToken, check
from .config import SegmentorConfig
from .decoding import STRATEGIES, MaskCandidate, Strategy, apply_strategy, decode_prompts
from .exceptions import ConfigError, InvalidInputError, NotFoundError
from .lifecycle import BackendSlot, holds_backend
from .models import BBox, EmbeddedImage, Point, Prompt, SegmentationResult
from .prompts import build_batches, normalize_prompts
from .utils.cache import CacheStats, EmbeddingCache
from .utils.image_io import image_digest, load_image
from .utils.masks import encode_mask, mask_area, mask_bbox, validate_formats
from .utils.overlay import render_overlay
from .utils.tiling import Window, plan_windows, shift_prompt

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

    Thread safety: ``segment*``, ``embed``, ``warmup`` and ``cache_stats`` may be called from several threads at
    once; concurrent requests for the same image encode it once. ``set_backend`` and ``close`` may run meanwhile:
    each running call keeps the backend it started with until it returns, and a replaced or closed backend is
    closed when its last call finishes (see :mod:`perceptra_seg.lifecycle`). A call that starts after ``close()``
    fails with :class:`~perceptra_seg.exceptions.BackendError` once it needs the model. Configuration read by a
    call (postprocess, outputs) is the one current when it reads it: ``set_backend`` swaps ``config`` too.
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
        self._slot = BackendSlot(backend if isinstance(backend, Backend) else create_backend(self.config))
        self._cache: EmbeddingCache[ImageEmbedding] = EmbeddingCache(self.config.cache.max_bytes)
        self._lock = threading.Lock()
        self.encoder_calls = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Segmentor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop cached embeddings and release the backend's models (after the calls still running on it)."""
        self._cache.clear()
        self._slot.close()

    def set_backend(self, name: str) -> None:
        """Switch runtime (e.g. ``"torch"``); the model is loaded anew and cached embeddings are dropped."""
        config = SegmentorConfig.resolve(self.config, backend=name)
        new_backend = create_backend(config)
        self._slot.replace(new_backend)  # the old one closes after the calls still using it
        self.config = config
        self._cache.clear()

    @holds_backend
    def warmup(self, image_size: tuple[int, int] = (1024, 1024)) -> float:
        """Run the encoder and decoder once on a blank ``(H, W)`` image (not cached); returns the seconds taken."""
        start = time.perf_counter()
        height, width = image_size
        image = np.zeros((height, width, 3), dtype=np.uint8)
        embedding = self._backend.encode(image)
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

    @holds_backend
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
        if not self.config.cache.enabled:
            raise ConfigError("embed() needs the embedding cache (cache.enabled = true)")
        pixels = self._load(image)
        check(cancel)
        key = self._cache_key(image_digest(pixels))
        embedding, _ = self._cache.get_or_compute(key, lambda: self._encode(pixels))
        if embedding.nbytes > self._cache.max_bytes:
            raise ConfigError(
                f"embed() cannot keep this image: its embedding takes {embedding.nbytes} bytes, more than the "
                f"whole embedding cache (cache.max_bytes = {self._cache.max_bytes})"
            )
        return EmbeddedImage(image_id=key, width=int(pixels.shape[1]), height=int(pixels.shape[0]))

    def cache_stats(self) -> CacheStats:
        """Hit/miss/eviction counters and current size of the embedding cache."""
        return self._cache.stats()

    # ------------------------------------------------------------------ public segmentation API

    def segment_from_box(
        self,
        image: Any,
        box: BBox | Sequence[float],
        *,
        output_formats: Sequence[str] | None = None,
        multimask: bool = False,
        mask_input: np.ndarray | None = None,
        return_overlay: bool = False,
        cancel: CancelToken | None = None,
    ) -> SegmentationResult:
        """Segment the object inside one ``(x1, y1, x2, y2)`` box; with ``multimask`` the best of 3 masks."""
        return self._best(
            image, {"box": box, "mask_input": mask_input}, output_formats, multimask, return_overlay, cancel
        )

    def segment_from_points(
        self,
        image: Any,
        points: Sequence[Point] | Sequence[Sequence[float]],
        *,
        output_formats: Sequence[str] | None = None,
        multimask: bool = False,
        mask_input: np.ndarray | None = None,
        return_overlay: bool = False,
        cancel: CancelToken | None = None,
    ) -> SegmentationResult:
        """Segment one object from ``(x, y, label)`` clicks (1 = foreground, 0 = background)."""
        return self._best(
            image,
            {"points": list(points), "mask_input": mask_input},
            output_formats,
            multimask,
            return_overlay,
            cancel,
        )

    def _best(
        self,
        image: Any,
        prompt: Mapping[str, Any],
        output_formats: Sequence[str] | None,
        multimask: bool,
        return_overlay: bool,
        cancel: CancelToken | None,
    ) -> SegmentationResult:
        """One prompt; the highest-scoring mask (the only one unless ``multimask``)."""
        results = self.segment(
            image,
            prompts=[prompt],
            output_formats=output_formats,
            multimask=multimask,
            return_overlay=return_overlay,
            cancel=cancel,
        )
        return max(results, key=lambda r: r.score)

    @holds_backend
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
        cancel: CancelToken | None = None,
    ) -> list[SegmentationResult]:
        """Segment every prompt on one image with one encoder pass and decoder calls of at most
        ``runtime.batch_size`` prompts of one shape.

        Args:
            image: numpy ``[H, W]``/``[H, W, 3]``/``[H, W, 4]`` array, PIL image, path, bytes, base64 or URL
                (see :func:`perceptra_seg.utils.image_io.load_image`).
            prompts: ``[{"box": (x1, y1, x2, y2), "points": [(x, y, label), ...], "mask_input": logits}, ...]``.
            boxes: flat form; each ``(x1, y1, x2, y2)`` box is its own prompt.
            points: flat form; all ``(x, y, label)`` points together are one prompt.
            strategy: ``all`` (one result per mask), ``largest`` (the single largest mask) or ``merge`` (the union
                of every mask, scored with the best score, ``prompt_index`` -1).
            output_formats: any of ``numpy``, ``rle``, ``png``, ``polygons``; default ``outputs.formats``.
            multimask: 3 masks per prompt instead of 1.
            return_overlay: attach a PNG of the image with the masks drawn.
            cancel: a :class:`~perceptra_seg.cancel.CancelToken` another thread may set; checked after decoding the
                image, after the encoder, between decoder batches and for every mask.

        Returns:
            Results in prompt order (``multimask``: 3 per prompt, best first is *not* applied; see ``score``).

        Raises:
            OperationCancelledError: ``cancel`` was set.
        """
        start = time.perf_counter()
        if strategy not in STRATEGIES:
            raise InvalidInputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        formats = validate_formats(output_formats if output_formats is not None else self.config.outputs.formats)
        pixels: np.ndarray | None = None
        if isinstance(image, EmbeddedImage):
            if return_overlay:
                raise InvalidInputError("return_overlay needs the image itself, not an embedded image id")
            size = (image.height, image.width)
        else:
            pixels = self._load(image)
            size = (int(pixels.shape[0]), int(pixels.shape[1]))
        limits = self.config.input
        normalized = normalize_prompts(
            size,
            prompts=prompts,
            boxes=boxes,
            points=points,
            max_prompts=limits.max_prompts,
            max_points=limits.max_points_per_prompt,
            mask_size=self._backend.mask_size,
        )
        check(cancel)
        candidates = apply_strategy(strategy, self._candidates(pixels, image, normalized, multimask, cancel))
        masks = [c.mask for c in candidates]
        overlay = None
        if pixels is not None and return_overlay:
            overlay = render_overlay(
                pixels,
                masks,
                boxes=[p.box for p in normalized if p.box is not None],
                points=[pt for p in normalized for pt in p.points],
            )
        request_id = uuid.uuid4().hex
        info = self._backend.info()
        outputs = self.config.outputs
        results = []
        for candidate in candidates:
            check(cancel)
            mask = candidate.mask
            encoded = encode_mask(
                mask,
                formats,
                rle_compressed=outputs.rle_compressed,
                png_bit_depth=outputs.png_bit_depth,
                polygon_tolerance=outputs.polygon_tolerance,
                polygon_min_area=outputs.polygon_min_area,
            )
            results.append(
                SegmentationResult(
                    score=candidate.score,
                    area=mask_area(mask),
                    bbox=mask_bbox(mask),
                    model_info=info,
                    request_id=request_id,
                    prompt_index=candidate.prompt_index,
                    low_res_logits=candidate.low_res_logits,
                    overlay_png=overlay,
                    **encoded,
                )
            )
        latency_ms = (time.perf_counter() - start) * 1000.0
        for result in results:
            result.latency_ms = latency_ms
        return results

    # ------------------------------------------------------------------ steps

    def _load(self, image: Any) -> np.ndarray:
        limits = self.config.input
        return load_image(
            image,
            max_pixels=limits.max_pixels,
            max_bytes=limits.max_bytes,
            allow_urls=limits.allow_urls,
            url_timeout_s=limits.url_timeout_s,
            max_decode_bytes=limits.max_decode_bytes,
        )

    def _encode(self, pixels: np.ndarray) -> ImageEmbedding:
        with self._lock:
            self.encoder_calls += 1
        return self._backend.encode(pixels)

    def _cache_key(self, digest: str, window: Window | None = None) -> str:
        """Model fingerprint + pixel digest (+ the window's bounds when tiling)."""
        key = f"{self._backend.fingerprint}|{digest}"
        return key if window is None else f"{key}|{window.x0},{window.y0},{window.x1},{window.y1}"

    def _digest(self, pixels: np.ndarray) -> str | None:
        """The full-image SHA-256 the cache keys on, or ``None`` when the cache is off (nothing would use it)."""
        return image_digest(pixels) if self.config.cache.enabled else None

    def _embedding(self, pixels: np.ndarray, digest: str | None, window: Window | None = None) -> ImageEmbedding:
        """``pixels`` encoded, through the cache when ``digest`` is given (see :meth:`_digest`)."""
        if digest is None:
            return self._encode(pixels)
        embedding, _ = self._cache.get_or_compute(self._cache_key(digest, window), lambda: self._encode(pixels))
        return embedding

    def _embedded(self, handle: EmbeddedImage) -> ImageEmbedding:
        embedding = self._cache.get(handle.image_id)
        if embedding is None:
            raise NotFoundError("embedded image not found or evicted from the cache; embed the image again")
        return embedding

    def _candidates(
        self, pixels: np.ndarray | None, image: Any, prompts: list[Prompt], multimask: bool, cancel: CancelToken | None
    ) -> list[MaskCandidate]:
        """Masks for every prompt, from the whole image, an embedded handle, or tiling windows."""
        decode = partial(
            decode_prompts,
            self._backend,
            multimask=multimask,
            postprocess=self.config.postprocess,
            batch_size=self.config.runtime.batch_size,
            cancel=cancel,
        )
        everything = list(range(len(prompts)))
        if pixels is None:
            embedding = self._embedded(image)
            return decode(embedding, prompts, everything, canvas_size=embedding.original_size)
        size = (int(pixels.shape[0]), int(pixels.shape[1]))
        tiling = self.config.tiling
        if not (tiling.enabled and max(size) > tiling.min_image_side):
            embedding = self._embedding(pixels, self._digest(pixels))
            return decode(embedding, prompts, everything, canvas_size=size)
        windows = plan_windows(
            prompts, size, window_size=tiling.window_size, margin=tiling.margin, max_windows=tiling.max_windows
        )
        digest = self._digest(pixels)
        by_index: dict[int, list[MaskCandidate]] = {}
        shifted = {window: [shift_prompt(prompts[i], window) for i in window.prompt_indices] for window in windows}
        for window in windows:
            crop = np.ascontiguousarray(pixels[window.y0 : window.y1, window.x0 : window.x1])
            check(cancel)
            embedding = self._embedding(crop, digest, window)
            for candidate in decode(
                embedding, shifted[window], window.prompt_indices, canvas_size=size, offset=(window.x0, window.y0)
            ):
                by_index.setdefault(candidate.prompt_index, []).append(candidate)
        return [candidate for index in everything for candidate in by_index[index]]

    # ------------------------------------------------------------------ segment everything

    @holds_backend
    def generate(
        self,
        image: Any,
        *,
        output_formats: Sequence[str] | None = None,
        cancel: CancelToken | None = None,
        **options: Any,
    ) -> list[SegmentationResult]:
        """Segment everything: Meta's automatic mask generator over this model (see docs/automatic.md).

        ``options`` are named as in Meta's generators (``points_per_side``, ``pred_iou_thresh``, ``crop_n_layers``,
        ``use_m2m``, ... :class:`~perceptra_seg.automatic.AutoOptions`); defaults follow the model family's
        generator. ``image`` may be an :meth:`embed` handle when ``crop_n_layers`` is 0. Results carry ``score``
        (predicted IoU), ``stability_score``, ``point_coords``, ``crop_box``, ``area``, ``bbox`` and the formats.
        """
        start, backend = time.perf_counter(), self._backend
        settings = auto_options(backend.family, **options)
        formats = validate_formats(output_formats if output_formats is not None else self.config.outputs.formats)
        if isinstance(image, EmbeddedImage):
            if settings.crop_n_layers:
                raise InvalidInputError("crop_n_layers > 0 needs the image itself, not an embedded image id")
            size, whole = (image.height, image.width), self._embedded(image)
            embed = lambda _box: whole  # noqa: E731 - the only region asked for is the whole image
        else:
            pixels = self._load(image)
            size, digest = (int(pixels.shape[0]), int(pixels.shape[1])), self._digest(pixels)

            def embed(box: tuple[int, int, int, int]) -> ImageEmbedding:
                if box == (0, 0, size[1], size[0]):
                    return self._embedding(pixels, digest)
                x0, y0, x1, y1 = box
                crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
                return self._embedding(crop, digest, Window(x0, y0, x1, y1, ()))

        masks = generate_masks(backend, size, settings, embed, cancel)
        return to_results(masks, size, formats, self.config.outputs, backend.info(), started=start, cancel=cancel)
