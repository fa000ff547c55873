"""Encoder batching across calls (``runtime.max_batch_size``): one batched encoder run for concurrent calls, each
caller's own embedding, errors to every member, cancellation of one member never failing the others."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from perceptra_seg import Segmentor
from perceptra_seg.backends.base import ImageEmbedding
from perceptra_seg.batching import EncoderBatcher
from perceptra_seg.cancel import CancelToken, OperationCancelledError
from perceptra_seg.config import SegmentorConfig
from perceptra_seg.exceptions import ConfigError

from ..conftest import BoxOracleBackend
from .test_tiny_images import small_sam2_dir  # noqa: F401  (the small SAM 2 fixture)


class FakeBatchEncoder:
    """Records every batch; each embedding's ``features`` is its image's first pixel value (so callers can check
    they got their own). ``gate``, when given, holds every run until set; ``error`` is raised by every run."""

    def __init__(self, gate: threading.Event | None = None, error: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.gate, self.error = gate, error

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        self.batches.append([int(image[0, 0, 0]) for image in images])
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.error is not None:
            raise self.error
        return [ImageEmbedding((4, 4), (4, 4), features=int(image[0, 0, 0]), nbytes=1) for image in images]


def _image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


def _in_threads(count: int, call: Callable[[int], Any]) -> list[Any]:
    """``call(i)`` for i < count in threads released together; each result or the exception raised."""
    barrier = threading.Barrier(count)

    def run(index: int) -> Any:
        barrier.wait()
        try:
            return call(index)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def _wait_until(predicate: Callable[[], bool]) -> None:
    event = threading.Event()
    for _ in range(3000):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError("condition not reached")


def test_concurrent_callers_share_one_run_and_get_their_own_embedding() -> None:
    backend, batcher = FakeBatchEncoder(), EncoderBatcher(4, max_wait_s=30.0)
    results = _in_threads(8, lambda i: batcher.encode(backend, _image(i + 1)))
    assert [r.features for r in results] == [i + 1 for i in range(8)]
    assert sorted(len(b) for b in backend.batches) == [4, 4]  # full batches close without waiting 30 s
    assert sorted(v for b in backend.batches for v in b) == list(range(1, 9))
    assert (batcher.runs, batcher.images) == (2, 8)


def test_an_error_reaches_every_member() -> None:
    failure = RuntimeError("encoder exploded")
    backend, batcher = FakeBatchEncoder(error=failure), EncoderBatcher(3, max_wait_s=30.0)
    results = _in_threads(3, lambda i: batcher.encode(backend, _image(i + 1)))
    assert results == [failure, failure, failure]
    assert len(backend.batches) == 1
    ok = FakeBatchEncoder()  # the next batch is a fresh one
    assert [r.features for r in _in_threads(3, lambda i: batcher.encode(ok, _image(i + 7)))] == [7, 8, 9]


def test_a_member_cancelled_before_the_run_is_left_out_and_the_others_finish() -> None:
    backend, batcher = FakeBatchEncoder(), EncoderBatcher(3, max_wait_s=30.0)
    token = CancelToken()

    def members() -> int:
        with batcher._lock:
            return sum(len(batch.members) for batch in batcher._open.values())

    with ThreadPoolExecutor(4) as pool:
        leader = pool.submit(batcher.encode, backend, _image(1))
        _wait_until(lambda: members() == 1)
        cancelled = pool.submit(batcher.encode, backend, _image(2), token)
        _wait_until(lambda: members() == 2)
        token.cancel("client left")
        with pytest.raises(OperationCancelledError, match="client left"):
            cancelled.result(timeout=30)
        assert members() == 1 and not backend.batches  # left before the run
        others = [pool.submit(batcher.encode, backend, _image(value)) for value in (3, 4)]
        assert [f.result(timeout=30).features for f in (leader, *others)] == [1, 3, 4]
    assert [sorted(b) for b in backend.batches] == [[1, 3, 4]]


def test_a_cancelled_leader_still_runs_the_batch_for_the_others() -> None:
    backend, batcher = FakeBatchEncoder(), EncoderBatcher(2, max_wait_s=0.2)
    token = CancelToken()
    with ThreadPoolExecutor(2) as pool:
        lead = pool.submit(batcher.encode, backend, _image(1), token)
        _wait_until(lambda: bool(batcher._open))
        token.cancel()
        follower = pool.submit(batcher.encode, backend, _image(2))  # fills the batch: it runs at once
        assert follower.result(timeout=30).features == 2
        with pytest.raises(OperationCancelledError):
            lead.result(timeout=30)
    assert backend.batches == [[2]]


def test_a_member_cancelled_during_the_run_stops_waiting_while_the_run_completes() -> None:
    gate = threading.Event()
    backend, batcher = FakeBatchEncoder(gate=gate), EncoderBatcher(2, max_wait_s=30.0)
    token = CancelToken()
    with ThreadPoolExecutor(2) as pool:
        lead = pool.submit(batcher.encode, backend, _image(1))
        _wait_until(lambda: bool(batcher._open))
        member = pool.submit(batcher.encode, backend, _image(2), token)
        assert backend.started.wait(30)
        token.cancel()
        with pytest.raises(OperationCancelledError):
            member.result(timeout=30)
        assert not lead.done()
        gate.set()
        assert lead.result(timeout=30).features == 1
    assert backend.batches == [[1, 2]]


def test_batched_encoder_features_match_one_image_at_a_time(small_segmentor: Segmentor, photos: dict) -> None:
    backend: Any = small_segmentor.backend
    images = [photos["coffee"][::2, ::2], photos["chelsea"][::3, ::2], photos["coffee"][50:350, 100:500]]
    images = [np.ascontiguousarray(image) for image in images]
    batched = backend.encode_batch(images)
    for image, embedding in zip(images, batched, strict=True):
        alone = backend.encode(image)
        assert (embedding.original_size, embedding.input_size) == (alone.original_size, alone.input_size)
        assert embedding.nbytes == alone.nbytes  # each embedding owns only its own row
        for a, b in zip(embedding.features, alone.features, strict=True):
            assert a.shape == b.shape and a.shape[0] == 1
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def _masks_and_logits(segmentor: Segmentor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    boxes = [(width * 0.1, height * 0.1, width * 0.6, height * 0.7), (width * 0.4, height * 0.3, width, height)]
    results = segmentor.segment(image, boxes=boxes, output_formats=["numpy"])
    masks = np.stack([np.asarray(r.mask, dtype=bool) for r in results])
    return masks, np.stack([r.low_res_logits for r in results])


@pytest.mark.parametrize("family", ["sam1", "sam2"])
def test_concurrent_segment_calls_batched_give_the_unbatched_masks(
    family: str, small_segmentor: Segmentor, photos: dict, request: pytest.FixtureRequest
) -> None:
    if family == "sam1":
        unbatched = small_segmentor
    else:
        directory = request.getfixturevalue("small_sam2_dir")
        unbatched = Segmentor(model="sam_v2", variant="hiera_tiny", device="cpu", checkpoint_path=directory)
    settings = unbatched.config.model_dump()
    settings["runtime"].update(max_batch_size=4, max_batch_wait_ms=10_000)
    batched = Segmentor(settings, backend=unbatched.backend)
    coffee, chelsea = photos["coffee"][::2, ::2], photos["chelsea"][::2, ::2]
    images = [np.ascontiguousarray(image) for image in (coffee, chelsea, coffee[::-1], chelsea[:, ::-1])]
    got = _in_threads(4, lambda i: _masks_and_logits(batched, images[i]))
    assert batched._batcher is not None and (batched._batcher.runs, batched._batcher.images) == (1, 4)
    for image, (masks, logits) in zip(images, got, strict=True):
        want_masks, want_logits = _masks_and_logits(unbatched, image)
        np.testing.assert_allclose(logits, want_logits, atol=2e-3, rtol=1e-3)
        for mask, want in zip(masks, want_masks, strict=True):
            union = np.logical_or(mask, want).sum()
            assert union == 0 or np.logical_and(mask, want).sum() / union >= 0.999
    if family == "sam2":
        unbatched.close()


def test_embed_handles_from_a_batch_answer_prompts(small_segmentor: Segmentor, photos: dict) -> None:
    settings = small_segmentor.config.model_dump()
    settings["runtime"].update(max_batch_size=2, max_batch_wait_ms=10_000)
    batched = Segmentor(settings, backend=small_segmentor.backend)
    images = [np.ascontiguousarray(photos["coffee"][::2, ::2]), np.ascontiguousarray(photos["chelsea"][::2, ::2])]
    handles = _in_threads(2, lambda i: batched.embed(images[i]))
    assert batched._batcher is not None and batched._batcher.runs == 1
    for image, handle in zip(images, handles, strict=True):
        box = (10, 10, 120, 90)
        assert np.array_equal(
            batched.segment_from_box(handle, box, output_formats=["numpy"]).mask,
            small_segmentor.segment_from_box(image, box, output_formats=["numpy"]).mask,
        )


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 65}, "max_batch_size"),
        ({"max_batch_wait_ms": -1}, "max_batch_wait_ms"),
        ({"max_batch_size": "many"}, "max_batch_size"),
    ],
)
def test_batching_settings_are_validated(runtime: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SegmentorConfig.load(None, runtime=runtime)


def test_batching_needs_a_backend_that_encodes_batches() -> None:
    with pytest.raises(ConfigError, match="encodes image batches"):
        Segmentor({"runtime": {"max_batch_size": 2}}, backend=BoxOracleBackend())  # type: ignore[arg-type]
    unbatched = Segmentor({"runtime": {"max_batch_size": 1}}, backend=BoxOracleBackend())  # type: ignore[arg-type]
    assert unbatched._batcher is None
