"""Image URLs in the service: checked, then downloaded *before* the request is admitted to inference.

* :func:`parse_image_url` turns the request's text into an :class:`httpx.URL` or raises
  :class:`~perceptra_seg.exceptions.InvalidInputError` (400): unbalanced brackets, an IPv4 address in brackets, a
  port out of range, a missing host or a scheme other than http(s) are the client's mistake, never a 500.
* :class:`UrlFetcher` downloads on its own pool of ``server.max_url_fetches`` threads (beyond that: 503 with
  ``Retry-After``), so a slow image server never holds an inference slot. Each download has a **total** deadline,
  ``server.url_fetch_timeout_s``, on top of the per-read ``input.url_timeout_s``: when it passes, the request gets
  504 ``url_timeout`` at once and the download's socket is shut down, which ends the worker thread's blocked read
  (:func:`~perceptra_seg.utils.url_download.download_image_body`, shared with the SDK). The body is capped at
  ``input.max_bytes``. It is decoded later, inside the inference slot like an uploaded image (``input.max_pixels``,
  ``input.max_decode_bytes``), so decode memory stays bounded by ``server.max_concurrency`` and a queued request
  holds encoded bytes, not pixels.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from ..config import SegmentorConfig
from ..exceptions import ResourceExhaustedError, SegmentorError
from ..utils.image_io import is_url, parse_image_url
from ..utils.url_download import SocketAbort, download_image_body, url_origin
from .errors import QueueFullError

__all__ = ["UrlFetchTimeoutError", "UrlFetcher", "is_url", "parse_image_url"]

_RETRY_AFTER_S = 1


class UrlFetchTimeoutError(SegmentorError):
    """The image URL did not deliver its whole body within ``server.url_fetch_timeout_s``."""

    http_status = 504
    code = "url_timeout"


class UrlFetcher:
    """Bounded, deadline-limited downloads of image URLs, off the event loop and outside the inference slots.

    Args:
        client: the (SSRF-guarded) client; its timeouts are the per-operation ones.
        config: ``server.max_url_fetches``, ``server.url_fetch_timeout_s``, ``input.max_bytes``.
    """

    def __init__(self, client: httpx.Client, config: SegmentorConfig) -> None:
        self.client = client
        self.capacity = config.server.max_url_fetches
        self.deadline_s = config.server.url_fetch_timeout_s
        self.max_bytes = config.input.max_bytes
        self._executor = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="segmentor-url-fetch")
        self._lock = threading.Lock()
        self._active = 0
        self._aborts: set[SocketAbort] = set()

    @property
    def active(self) -> int:
        """Downloads holding a fetch thread (a timed-out one until its thread really ended)."""
        with self._lock:
            return self._active

    async def load(
        self, text: str, *, max_bytes: int | None = None, sink: Callable[[bytes], object] | None = None
    ) -> bytes:
        """Download the image at URL ``text``: its encoded bytes (decoded later, in the inference slot).

        ``max_bytes`` replaces ``input.max_bytes``, and ``sink`` receives the chunks instead (``b""`` is returned),
        for uploaded videos (``server.max_video_bytes``, written to disk).

        Raises:
            InvalidInputError: bad URL, refused address (``url_not_allowed``), HTTP error status, network error.
            ImageTooLargeError: body over ``input.max_bytes`` (413).
            UrlFetchTimeoutError: not done within ``server.url_fetch_timeout_s`` (504).
            QueueFullError: ``server.max_url_fetches`` downloads already running (503, ``Retry-After``).
        """
        url = parse_image_url(text)
        with self._lock:
            if self._active >= self.capacity:
                raise QueueFullError(
                    f"server busy: {self.capacity} image downloads in progress; retry later", retry_after=_RETRY_AFTER_S
                )
            self._active += 1
            abort = SocketAbort()
            self._aborts.add(abort)
        try:
            cap = self.max_bytes if max_bytes is None else max_bytes
            future = self._executor.submit(self._download, url, abort, cap, sink)
        except RuntimeError:  # executor shut down: the app is stopping
            self._release(abort)
            raise ResourceExhaustedError("server is shutting down") from None
        future.add_done_callback(lambda _: self._release(abort))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.deadline_s)
        except asyncio.TimeoutError:
            abort.trigger()
            future.cancel()
            where = url_origin(url)
            raise _fetch_timeout(f"fetching image from {where} took longer than {self.deadline_s:g} s") from None
        except asyncio.CancelledError:  # the request itself was abandoned
            abort.trigger()
            raise

    def _release(self, abort: SocketAbort) -> None:
        with self._lock:
            self._active -= 1
            self._aborts.discard(abort)

    def _download(
        self, url: httpx.URL, abort: SocketAbort, max_bytes: int, sink: Callable[[bytes], object] | None
    ) -> bytes:
        return download_image_body(
            self.client,
            url,
            max_bytes=max_bytes,
            deadline_s=self.deadline_s,
            deadline_error=_fetch_timeout,
            abort=abort,
            sink=sink,
        )

    def shutdown(self) -> None:
        """Stop accepting downloads, stop the running ones (their sockets are shut down) and wait for them."""
        with self._lock:
            aborts = list(self._aborts)
        for abort in aborts:
            abort.trigger()
        self._executor.shutdown(wait=True, cancel_futures=True)


def _fetch_timeout(message: str) -> UrlFetchTimeoutError:
    """The 504 of a download past its deadline (raised by the request or by the download thread, whichever is first)."""
    return UrlFetchTimeoutError(f"{message} (server.url_fetch_timeout_s)")
