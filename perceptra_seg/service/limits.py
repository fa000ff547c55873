"""Admission limits: request body size and read deadline, and a bounded inference queue with a per-request deadline.

* :class:`BodySizeLimitMiddleware` answers 413 from the ``Content-Length`` header before any body byte is read,
  and stops a body without that header (chunked) as soon as it grows past the limit. It also gives the client
  ``body_timeout_s`` (``server.body_timeout_s``) from the end of the headers to deliver the whole body; a slower
  body gets 408 and its connection is closed (uvicorn has no body-read timeout of its own).
* :class:`InferenceRunner` runs the blocking :class:`~perceptra_seg.Segmentor` calls on its own thread pool of
  ``max_concurrency`` threads, so the event loop (and ``/v1/healthz``) stays responsive. At most
  ``max_concurrency + max_queue`` requests are admitted at once; the next one gets :class:`QueueFullError` (503 with
  ``Retry-After``) immediately. A request whose queue wait plus run time exceeds ``timeout_s`` gets
  :class:`RequestTimeoutError` (504) at once, and its :class:`~perceptra_seg.cancel.CancelToken` is set: a call
  that already started stops at its next check (between decoder batches, per mask) and only then gives its slot
  back, so a burst of timeouts never oversubscribes the device. The caller sets the same token when the client
  disconnects.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..backends.oom import oom_guard
from ..cancel import CancelToken, OperationCancelledError
from ..exceptions import ResourceExhaustedError
from .errors import PayloadTooLargeError, QueueFullError, RequestTimeoutError, error_response
from .metrics import ServiceMetrics

__all__ = ["BodySizeLimitMiddleware", "InferenceRunner"]

T = TypeVar("T")

_QUEUE_RETRY_AFTER_S = 1
_DEADLINE_REASON = "request deadline passed"
#: Sent with answers given before the body was read to its end: the rest of it is not worth waiting for.
_CLOSE = {"Connection": "close"}


class BodySizeLimitMiddleware:
    """413 for request bodies over ``max_bytes`` (declared or actually streamed); 408 for a body not complete
    ``body_timeout_s`` after the headers. ``path_limits`` gives some paths (video uploads) their own limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        body_timeout_s: float | None = None,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            error = PayloadTooLargeError(f"request body is {declared} bytes, over the {max_bytes} byte limit")
            await error_response(413, error.code, str(error))(scope, receive, send)
            return
        received = 0
        deadline = None if self.body_timeout_s is None else time.monotonic() + self.body_timeout_s
        body_done = False

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if deadline is None or body_done:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    raise HTTPException(
                        408, f"request body not received within {self.body_timeout_s:g} s", headers=_CLOSE
                    ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True  # later receives wait for the disconnect: no deadline on those
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # Raised inside the endpoint's body read; FastAPI re-raises HTTPException unchanged.
                    raise HTTPException(413, f"request body is over the {max_bytes} byte limit", headers=_CLOSE)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class InferenceRunner:
    """Bounded concurrency + bounded queue + deadline for blocking inference calls.

    Args:
        max_concurrency: calls running at the same time (worker threads).
        max_queue: admitted calls waiting for a worker; beyond ``max_concurrency + max_queue`` → 503.
        timeout_s: deadline per request, counted from admission (queue wait included) → 504.
        metrics: updated with ``queue_depth`` and ``inflight_requests``.
    """

    def __init__(self, *, max_concurrency: int, max_queue: int, timeout_s: float, metrics: ServiceMetrics) -> None:
        self.capacity = max_concurrency + max_queue
        self.timeout_s = timeout_s
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="segmentor-inference")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0

    @property
    def admitted(self) -> int:
        """Requests holding a slot (running or waiting)."""
        with self._lock:
            return self._admitted

    async def run(
        self, func: Callable[[], T], *, cancel: CancelToken | None = None, timeout_s: float | None = None
    ) -> T:
        """Run ``func`` on a worker thread (with the caller's context variables) and return its result.

        Args:
            func: the blocking call; it should pass ``cancel`` to the SDK so that it stops when the token is set.
            cancel: set here when the deadline passes (the caller may set it too, e.g. on a disconnect).
            timeout_s: this call's deadline instead of the runner's ``timeout_s``.

        Raises:
            QueueFullError: no free slot (503, ``Retry-After``), raised before anything is queued.
            RequestTimeoutError: the deadline passed (504); a started call is cancelled through ``cancel`` and keeps
                its slot until it stopped. The same token is set when the awaiting task itself is cancelled.
            ResourceExhaustedError: the call ran out of (device) memory (503).
        """
        with self._lock:
            if self._admitted >= self.capacity:
                raise QueueFullError(
                    f"server busy: {self.capacity} requests in progress or queued; retry later",
                    retry_after=_QUEUE_RETRY_AFTER_S,
                )
            self._admitted += 1
            self._update_gauges()
        context = contextvars.copy_context()
        try:
            future = self._executor.submit(context.run, self._call, func, cancel)
        except RuntimeError:  # executor shut down: the app is stopping
            self._release(None)
            raise ResourceExhaustedError("server is shutting down") from None
        future.add_done_callback(self._release)
        deadline = self.timeout_s if timeout_s is None else timeout_s
        message = f"request took longer than {deadline:g} s"
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), deadline)
        except asyncio.TimeoutError:
            if cancel is not None:
                cancel.cancel(_DEADLINE_REASON)
            future.cancel()  # frees the slot at once if the call had not started yet
            raise RequestTimeoutError(message) from None
        except OperationCancelledError:
            if cancel is not None and cancel.reason == _DEADLINE_REASON:
                raise RequestTimeoutError(message) from None
            raise
        except asyncio.CancelledError:  # the request's task itself was cancelled (e.g. a forced server shutdown)
            if cancel is not None:
                cancel.cancel("request abandoned")
            future.cancel()
            raise

    def _call(self, func: Callable[[], T], cancel: CancelToken | None) -> T:
        if cancel is not None:
            cancel.check()  # cancelled while it waited in the queue (its client left): do not start at all
        with self._lock:
            self._running += 1
            self._update_gauges()
        try:
            with oom_guard("during inference", detail=False):
                return func()
        finally:
            with self._lock:
                self._running -= 1
                self._update_gauges()

    def _release(self, _: Future[T] | None) -> None:
        with self._lock:
            self._admitted -= 1
            self._update_gauges()

    def _update_gauges(self) -> None:
        self._metrics.inflight.set(self._running)
        self._metrics.queue_depth.set(self._admitted - self._running)

    def shutdown(self) -> None:
        """Stop accepting work, cancel queued calls and wait for running ones (e.g. timed-out calls) to finish."""
        self._executor.shutdown(wait=True, cancel_futures=True)
