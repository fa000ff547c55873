"""Encoder batching across calls (``runtime.max_batch_size`` > 1): concurrent calls that each need one image
encoded share one batched encoder run.

How a batch forms (no background thread): the first caller that finds no open batch for its backend opens one and
leads it; callers arriving while it is open join it. The leader waits until the batch is full
(``max_batch_size`` images) or ``max_batch_wait_ms`` passed, then for the encoder (one batch runs at a time, so a
batch keeps collecting callers while the previous one runs), closes the batch and runs
``backend.encode_batch(images)`` in its own thread; every member gets its own
:class:`~perceptra_seg.backends.ImageEmbedding`.

* Errors: an exception of the batched run is raised in every member's call.
* Cancellation: a member whose :class:`~perceptra_seg.cancel.CancelToken` is set stops waiting at once
  (:class:`~perceptra_seg.cancel.OperationCancelledError`); before the batch closed its image is left out, after
  that the batch runs on without it. A cancelled leader still runs the batch for the other members (its image left
  out), then raises. No member's cancellation or timeout fails another member.
* Backends: only a backend with ``encode_batch`` (:class:`BatchEncoder`, the torch backend) can batch; a batch holds
  images for one backend instance only (``Segmentor.set_backend`` starts new batches).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .backends.base import ImageEmbedding
from .cancel import CancelToken
from .exceptions import ConfigError

if TYPE_CHECKING:
    from .backends.base import Backend
    from .config import SegmentorConfig

__all__ = ["BatchEncoder", "EncoderBatcher", "batcher_for"]

#: how often a waiting member looks at its cancel token (seconds)
_CANCEL_POLL_S = 0.02


@runtime_checkable
class BatchEncoder(Protocol):
    """A backend that encodes several images in one call."""

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """Encode RGB uint8 ``[H, W, 3]`` images (sizes may differ) in one encoder run; one embedding per image,
        in order, each as :meth:`~perceptra_seg.backends.Backend.encode` would return it."""
        ...


class _Member:
    """One caller's image in a batch and what it gets back."""

    __slots__ = ("error", "image", "result")

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.result: ImageEmbedding | None = None
        self.error: BaseException | None = None


class _Batch:
    def __init__(self, backend: BatchEncoder) -> None:
        self.backend = backend
        self.members: list[_Member] = []
        self.closed = False
        self.full = threading.Event()
        self.done = threading.Event()


class EncoderBatcher:
    """Batches concurrent ``encode`` calls (see the module docstring). Thread-safe.

    Args:
        max_batch_size: most images per encoder run (≥ 1; 1 runs every image alone through ``encode_batch``).
        max_wait_s: how long a batch waits for more images after its first one arrived.

    Attributes:
        runs: batched encoder runs so far; images: images encoded in them (``images / runs`` = mean batch size).
    """

    def __init__(self, max_batch_size: int, max_wait_s: float) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._encoder = threading.Lock()  # one batch on the encoder at a time
        self._open: dict[int, _Batch] = {}  # id(backend) → the batch still accepting images
        self.runs = 0
        self.images = 0

    def encode(self, backend: BatchEncoder, image: np.ndarray, cancel: CancelToken | None = None) -> ImageEmbedding:
        """Encode ``image`` (RGB uint8 ``[H, W, 3]``) with ``backend``, in a batch with concurrent callers.

        Raises:
            OperationCancelledError: ``cancel`` was set while waiting (or before).
            Exception: whatever the batched encoder run raised.
        """
        if cancel is not None:
            cancel.check()
        member = _Member(image)
        with self._lock:
            batch = self._open.get(id(backend))
            leader = batch is None or batch.backend is not backend
            if leader:
                batch = self._open[id(backend)] = _Batch(backend)
            assert batch is not None
            batch.members.append(member)
            if len(batch.members) >= self.max_batch_size:
                self._close(batch)
        if leader:
            self._lead(batch, member, cancel)
        else:
            self._follow(batch, member, cancel)
        if member.error is not None:
            raise member.error
        assert member.result is not None
        return member.result

    def _close(self, batch: _Batch) -> None:
        """No more members (call with ``_lock`` held)."""
        if not batch.closed:
            batch.closed = True
            batch.full.set()
            if self._open.get(id(batch.backend)) is batch:
                del self._open[id(batch.backend)]

    def _lead(self, batch: _Batch, member: _Member, cancel: CancelToken | None) -> None:
        batch.full.wait(self.max_wait_s)
        with self._encoder:
            with self._lock:
                self._close(batch)
                if cancel is not None and cancel.cancelled:
                    batch.members.remove(member)
                members = list(batch.members)
            try:
                if members:
                    self._run(batch.backend, members)
            finally:
                batch.done.set()
        if cancel is not None:
            cancel.check()

    def _follow(self, batch: _Batch, member: _Member, cancel: CancelToken | None) -> None:
        if cancel is None:
            batch.done.wait()
            return
        while not batch.done.wait(_CANCEL_POLL_S):
            if cancel.cancelled:
                with self._lock:
                    if not batch.closed:
                        batch.members.remove(member)
                cancel.check()

    def _run(self, backend: BatchEncoder, members: list[_Member]) -> None:
        try:
            embeddings = backend.encode_batch([m.image for m in members])
            if len(embeddings) != len(members):
                raise RuntimeError(f"encode_batch returned {len(embeddings)} embeddings for {len(members)} images")
        except BaseException as exc:  # every member raises it (KeyboardInterrupt included), the leader too
            for m in members:
                m.error = exc
        else:
            for m, embedding in zip(members, embeddings, strict=True):
                m.result = embedding
        with self._lock:
            self.runs += 1
            self.images += len(members)


def batcher_for(config: SegmentorConfig, backend: Backend) -> EncoderBatcher | None:
    """The encoder batcher ``runtime.max_batch_size`` asks for (``None`` when it is 1).

    Raises:
        ConfigError: batching asked for with a backend that cannot encode batches.
    """
    runtime = config.runtime
    if runtime.max_batch_size == 1:
        return None
    if not isinstance(backend, BatchEncoder):
        raise ConfigError(
            f"runtime.max_batch_size {runtime.max_batch_size} needs a backend that encodes image batches (torch);"
            f" the {config.runtime.backend} backend encodes one image per call: set runtime.max_batch_size to 1"
        )
    return EncoderBatcher(runtime.max_batch_size, runtime.max_batch_wait_ms / 1000.0)
