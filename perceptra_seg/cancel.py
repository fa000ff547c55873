"""Cooperative cancellation of SDK calls: a token another thread sets, checked between units of work.

``Segmentor.segment`` (and ``segment_from_box`` / ``segment_from_points`` / ``embed``) take ``cancel=token``. The
call checks the token after decoding the image, after the image encoder, between mask-decoder batches (at most
``runtime.batch_size`` prompts each), for every mask it upsamples and for every mask it encodes, and raises
:class:`OperationCancelledError` as soon as it sees the token set. A single encoder or decoder call is never
interrupted, so the latency of a cancellation is one such call. The REST service sets the token when a request
passes its deadline or its client disconnects, so abandoned work gives its inference slot back at once.

Example::

    token = CancelToken()
    threading.Timer(2.0, token.cancel).start()
    try:
        results = seg.segment(image, boxes=many_boxes, cancel=token)
    except OperationCancelledError:
        ...
"""

from __future__ import annotations

import threading

from .exceptions import SegmentorError

__all__ = ["CancelToken", "OperationCancelledError"]


class OperationCancelledError(SegmentorError):
    """The call was cancelled through its :class:`CancelToken` (the REST service answers its own 504 instead)."""

    http_status = 503
    code = "cancelled"


class CancelToken:
    """A thread-safe, one-way flag: once :meth:`cancel` was called, :meth:`check` raises."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the call holding this token to stop (the first reason given is kept)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (the call holding the token stops at its next check)."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`OperationCancelledError` if the token was cancelled.

        Raises:
            OperationCancelledError: naming the reason given to :meth:`cancel`.
        """
        if self._event.is_set():
            raise OperationCancelledError(f"operation cancelled: {self.reason}")


def check(token: CancelToken | None) -> None:
    """:meth:`CancelToken.check` for an optional token."""
    if token is not None:
        token.check()
