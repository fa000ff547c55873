"""Downloading an image URL with a byte cap and a **total** deadline that also ends a blocked read.

httpx's timeouts are per operation: a server that sends one header byte every few seconds never trips the read
timeout, and h11 accepts up to 16 KiB of header, so such a download could last hours. :func:`download_image_body`
arms a timer for the whole download; when it fires, :class:`SocketAbort` shuts down the download's socket (taken
from httpx's ``trace`` extension when the connection is made), which ends the blocked read at once. The SDK's
:func:`~perceptra_seg.utils.image_io.fetch_url` and the service's
:class:`~perceptra_seg.service.url_fetch.UrlFetcher` both download through it.

A connection that a caller's client reuses from its pool is not seen by the trace (no new connection is made), so
only the chunk-by-chunk deadline check applies to it; the service's SSRF-guarded client never reuses connections.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from perceptra_seg.exceptions import ImageTooLargeError, InvalidInputError, SegmentorError

__all__ = ["SocketAbort", "download_image_body", "url_origin"]


class SocketAbort:
    """Shuts down the socket(s) of one download from another thread; later connections are shut at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.triggered = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx/httpcore ``trace`` callback: remember the socket of every connection this download opens."""
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            triggered = self.triggered
        if triggered:
            _shutdown(sock)

    def trigger(self) -> None:
        """Stop the download: shut down every socket it opened so far (and any it opens later)."""
        with self._lock:
            self.triggered = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def url_origin(url: httpx.URL) -> str:
    """``scheme://host`` of ``url``: what error messages show (never the path or query, which may hold secrets)."""
    return f"{url.scheme}://{url.host}"


def download_image_body(
    client: httpx.Client,
    url: httpx.URL,
    *,
    max_bytes: int,
    deadline_s: float,
    deadline_error: Callable[[str], SegmentorError],
    abort: SocketAbort | None = None,
    sink: Callable[[bytes], object] | None = None,
) -> bytes:
    """GET ``url`` with ``client`` and return the body, at most ``max_bytes``, all of it within ``deadline_s``.

    Args:
        client: the client to use (its timeouts are the per-operation ones; its redirect policy applies).
        url: the parsed URL (see :func:`~perceptra_seg.utils.image_io.parse_image_url`).
        max_bytes: body cap: a larger ``Content-Length`` is refused up front, a larger body as soon as it grows past.
        deadline_s: the whole download's deadline; when it passes the socket is shut down.
        deadline_error: builds the error raised when the deadline passed, from a message.
        abort: a :class:`SocketAbort` the caller may also trigger (e.g. on shutdown); a new one when ``None``.
        sink: receives each chunk as it arrives instead of keeping it (uploaded videos go to disk); ``b""`` is
            returned then.

    Raises:
        InvalidInputError: a non-2xx status, a per-operation timeout or a network error.
        ImageTooLargeError: the body is over ``max_bytes``.
        SegmentorError: from ``deadline_error``, when ``deadline_s`` passed (or ``abort`` was triggered).
    """
    where = url_origin(url)
    abort = abort if abort is not None else SocketAbort()
    late = f"fetching image from {where} took longer than {deadline_s:g} s"
    deadline = time.monotonic() + deadline_s
    timer = threading.Timer(deadline_s, abort.trigger)
    timer.daemon = True
    timer.start()
    try:
        with client.stream("GET", url, extensions={"trace": abort.trace}) as response:
            if not 200 <= response.status_code < 300:
                hint = " (redirects are not followed)" if 300 <= response.status_code < 400 else ""
                raise InvalidInputError(f"fetching image from {where} failed with HTTP {response.status_code}{hint}")
            declared = response.headers.get("content-length", "").strip()
            if declared.isdigit() and int(declared) > max_bytes:
                raise ImageTooLargeError(f"image at {where} is {declared} bytes, over the {max_bytes} limit")
            chunks: list[bytes] = []
            received = 0
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received > max_bytes:
                    raise ImageTooLargeError(f"image at {where} is larger than the {max_bytes} byte limit")
                if abort.triggered or time.monotonic() > deadline:
                    raise deadline_error(late)
                if sink is not None:
                    sink(chunk)
                else:
                    chunks.append(chunk)
            if abort.triggered:  # the shut-down socket may read as a clean end of a body without a length
                raise deadline_error(late)
            return b"".join(chunks)
    except httpx.TimeoutException:
        if abort.triggered:
            raise deadline_error(late) from None
        raise InvalidInputError(f"timed out reading image from {where} (a read or connect took too long)") from None
    except httpx.HTTPError as exc:
        if abort.triggered:
            raise deadline_error(late) from None
        raise InvalidInputError(f"could not fetch image from {where}: {type(exc).__name__}") from None
    finally:
        timer.cancel()
