"""F5: work stops when its cancel token is set, and a request's work is bounded up front (the service's deadline
and disconnect handling run against a real server process in test_hostile_review.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from perceptra_seg import Segmentor
from perceptra_seg.backends.base import DecoderOutput, ImageEmbedding, PromptBatch
from perceptra_seg.cancel import CancelToken, OperationCancelledError
from perceptra_seg.service.limits import InferenceRunner
from perceptra_seg.service.metrics import ServiceMetrics

from .helpers import FakeBackend, b64_png, build_config

BOXES = [[1 + i % 20, 1, 30, 30] for i in range(100)]


class _CancellingBackend(FakeBackend):
    """Sets ``token`` during decoder call number ``at_call`` and records every batch size."""

    def __init__(self, token: CancelToken, at_call: int) -> None:
        super().__init__()
        self.token = token
        self.at_call = at_call
        self.sizes: list[int] = []

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        self.sizes.append(len(batch))
        if len(self.sizes) == self.at_call:
            self.token.cancel("test")
        return super().decode(embedding, batch, multimask=multimask)


def _segmentor(backend: FakeBackend, batch_size: int) -> Segmentor:
    return Segmentor(build_config(runtime={"device": "cpu", "batch_size": batch_size}), backend=backend)


def test_a_cancelled_token_stops_before_the_decoder() -> None:
    token = CancelToken()
    token.cancel("caller gave up")
    backend = FakeBackend()
    with pytest.raises(OperationCancelledError, match="caller gave up"):
        _segmentor(backend, 4).segment(b64_png(), boxes=BOXES[:8], cancel=token)
    assert backend.decode_calls == 0


@pytest.mark.parametrize(("batch_size", "at_call"), [(10, 1), (10, 3), (100, 1)])
def test_cancellation_is_seen_at_the_next_batch_or_mask(batch_size: int, at_call: int) -> None:
    token = CancelToken()
    backend = _CancellingBackend(token, at_call)
    with pytest.raises(OperationCancelledError):
        _segmentor(backend, batch_size).segment(b64_png(), boxes=BOXES, output_formats=["rle"], cancel=token)
    assert backend.sizes == [batch_size] * at_call  # no decoder call after the one that saw the cancel


def test_an_untouched_token_changes_nothing() -> None:
    segmentor = _segmentor(FakeBackend(), 7)
    with_token = segmentor.segment(b64_png(), boxes=BOXES[:20], output_formats=["rle"], cancel=CancelToken())
    without = segmentor.segment(b64_png(), boxes=BOXES[:20], output_formats=["rle"])
    assert [r.rle for r in with_token] == [r.rle for r in without] and len(without) == 20


def test_work_is_bounded_before_admission(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(server={"max_mask_outputs": 6}) as client:
        ok = client.post(
            "/v1/segment", json={"image": b64_png(), "boxes": BOXES[:2], "multimask": True, "output_formats": ["rle"]}
        )
        assert ok.status_code == 200 and len(ok.json()["results"]) == 6
        too_much = client.post(
            "/v1/segment",
            json={"image": b64_png(), "boxes": BOXES[:2], "multimask": True, "output_formats": ["rle", "polygons"]},
        )
        assert too_much.status_code == 413, too_much.text
        error = too_much.json()["error"]
        assert error["code"] == "request_too_large"
        assert "2 prompts x 3 masks x 2 output formats = 12" in error["message"]
        assert "server.max_mask_outputs" in error["message"]
        box = client.post(
            "/v1/segment/box",
            json={
                "image": b64_png(),
                "box": [1, 1, 9, 9],
                "multimask": True,
                "output_formats": ["rle", "png", "polygons"],
            },
        )
        assert box.status_code == 413
    assert fake_backend.encode_calls == 2  # the warm-up and the first request


def test_a_call_cancelled_while_queued_never_starts() -> None:
    """A queued request whose client left used to start anyway once a worker was free (decoding its image, up to
    input.max_decode_bytes, before the SDK's first check); now the runner drops it before it starts."""
    release = threading.Event()
    ran: list[str] = []

    def blocking() -> str:
        release.wait(10)
        ran.append("first")
        return "first"

    def queued() -> str:
        ran.append("queued")
        return "queued"

    async def scenario() -> None:
        runner = InferenceRunner(max_concurrency=1, max_queue=1, timeout_s=30, metrics=ServiceMetrics())
        try:
            first = asyncio.ensure_future(runner.run(blocking))
            token = CancelToken()
            second = asyncio.ensure_future(runner.run(queued, cancel=token))
            await asyncio.sleep(0.1)
            token.cancel("client disconnected")
            release.set()
            assert await first == "first"
            with pytest.raises(OperationCancelledError, match="client disconnected"):
                await second
            assert runner.admitted == 0
        finally:
            release.set()
            runner.shutdown()

    asyncio.run(scenario())
    assert ran == ["first"]


def test_a_cancelled_request_task_cancels_its_call() -> None:
    """When the task awaiting the runner is cancelled (a forced shutdown cancels request tasks), the call used to
    run on to its end; now its token is set and it stops at its next check."""
    started = threading.Event()
    stopped: list[str] = []

    def job(token: CancelToken) -> str:
        started.set()
        for _ in range(1000):  # a call that checks its token between units of work
            if token.cancelled:
                stopped.append(token.reason)
                return "stopped"
            threading.Event().wait(0.01)
        return "ran to the end"

    async def scenario() -> None:
        runner = InferenceRunner(max_concurrency=1, max_queue=0, timeout_s=30, metrics=ServiceMetrics())
        token = CancelToken()
        try:
            task = asyncio.ensure_future(runner.run(lambda: job(token), cancel=token))
            while not started.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await asyncio.to_thread(runner.shutdown)
        assert runner.admitted == 0

    asyncio.run(scenario())
    assert stopped == ["request abandoned"]
