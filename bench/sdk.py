"""Our SDK as the benchmarks drive it: a ``Segmentor`` whose backend records what the encoder and decoder cost.

:class:`RecordingBackend` wraps the real backend (passed to ``Segmentor(config, backend=...)``, the public way to
supply one) and keeps the time spent inside ``encode``/``decode`` and the last embedding, so the decoder's own
compute time can be measured on exactly the embedding the SDK produced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from perceptra_seg import Segmentor
from perceptra_seg.backends import Backend, DecoderOutput, ImageEmbedding, PromptBatch, create_backend
from perceptra_seg.config import SegmentorConfig

from .memory import current_rss_mb
from .models import Runtime, Variant, segmentor_config

__all__ = ["LoadedSegmentor", "RecordingBackend", "load_segmentor"]


class RecordingBackend:
    """A backend proxy that adds up the seconds spent in ``encode`` / ``decode`` and keeps the last embedding."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.family = inner.family
        self.fingerprint = inner.fingerprint
        self.mask_size = inner.mask_size
        self.encode_s = 0.0
        self.decode_s = 0.0
        self.encode_calls = 0
        self.decode_calls = 0
        self.encode_times_ms: list[float] = []
        self.last_embedding: ImageEmbedding | None = None

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        start = time.perf_counter()
        embedding = self.inner.encode(image)
        elapsed = time.perf_counter() - start
        self.encode_s += elapsed
        self.encode_times_ms.append(elapsed * 1000.0)
        self.encode_calls += 1
        self.last_embedding = embedding
        return embedding

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        start = time.perf_counter()
        output = self.inner.decode(embedding, batch, multimask=multimask)
        self.decode_s += time.perf_counter() - start
        self.decode_calls += 1
        return output

    def reset(self) -> None:
        self.encode_s = self.decode_s = 0.0
        self.encode_calls = self.decode_calls = 0
        self.encode_times_ms = []

    def check_prompts(self) -> None:
        self.inner.check_prompts()

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def close(self) -> None:
        self.inner.close()


class LoadedSegmentor:
    """A ``Segmentor`` over a :class:`RecordingBackend`, with how long loading took and the memory after it."""

    def __init__(self, segmentor: Segmentor, backend: RecordingBackend, load_s: float, rss_mb: float | None) -> None:
        self.segmentor = segmentor
        self.backend = backend
        self.load_s = load_s
        self.rss_after_load_mb = rss_mb

    def sibling(self, **sections: dict[str, Any]) -> Segmentor:
        """Another ``Segmentor`` (own, empty cache) over the same loaded model, with config sections changed."""
        settings = self.segmentor.config.model_dump()
        for section, values in sections.items():
            settings[section].update(values)
        return Segmentor(SegmentorConfig.load(None, **settings), backend=self.backend)


def load_segmentor(
    variant: Variant, checkpoint: Path, runtime: Runtime, *, work_dir: Path, device: str
) -> LoadedSegmentor:
    """Load our model for one runtime row exactly as a user would configure it (see ``models.segmentor_config``)."""
    config = SegmentorConfig.load(
        None, **segmentor_config(variant, checkpoint, runtime, work_dir=work_dir, device=device)
    )
    start = time.perf_counter()
    backend = RecordingBackend(create_backend(config))
    segmentor = Segmentor(config, backend=backend)
    return LoadedSegmentor(segmentor, backend, time.perf_counter() - start, current_rss_mb())
