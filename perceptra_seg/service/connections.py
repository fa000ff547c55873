"""Connection-level limits: what uvicorn offers, plus the header-read deadline it lacks.

=================================  ===========================================================================
``server.header_timeout_s``        a connection that has not sent a complete request line and headers this long
                                   after it opened (or after its previous response) is closed —
                                   :class:`HeaderTimeoutH11Protocol`; uvicorn itself has no such timeout
``server.body_timeout_s``          the body must be complete this long after the headers, else 408 — an ASGI
                                   middleware (:class:`~perceptra_seg.service.limits.BodySizeLimitMiddleware`)
``server.keep_alive_timeout_s``    uvicorn's ``timeout_keep_alive``: idle keep-alive connections are closed
``server.max_connections``         uvicorn's ``limit_concurrency``: beyond this many connections or requests in
                                   progress, new requests get 503 at once
``server.max_header_bytes``        uvicorn's ``h11_max_incomplete_event_size``: larger request heads are 400
=================================  ===========================================================================

:func:`uvicorn_options` gives these as keyword arguments of ``uvicorn.Config`` / ``uvicorn.run``; ``serve()`` and
``segmentor-cli serve`` use them. With the plain ``uvicorn`` command line pass ``--http
perceptra_seg.service.connections:HeaderTimeoutH11Protocol``, ``--timeout-keep-alive``, ``--limit-concurrency`` and
``--h11-max-incomplete-event-size`` yourself (the body deadline is part of the app and always applies).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import SegmentorConfig

__all__ = ["HeaderTimeoutH11Protocol", "uvicorn_options"]


@functools.lru_cache(maxsize=1)
def _header_timeout_from_env() -> float:
    from .main import load_config_from_env

    return load_config_from_env().server.header_timeout_s


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes connections whose request headers do not arrive in time.

    The timer runs from the moment the connection opens, and again from the end of each response, until the next
    request's headers are complete; a slow body is the body deadline's business. The timeout comes from the
    ``header_timeout_s`` attribute of the uvicorn config (set by :func:`~perceptra_seg.service.main.uvicorn_config`),
    else from ``server.header_timeout_s`` of the configuration in the environment (``SEGMENTOR_CONFIG`` and
    ``SEGMENTOR_*``), which is where the served app reads its own configuration.
    """

    _header_timer: asyncio.TimerHandle | None = None

    def _header_timeout_s(self) -> float:
        value = getattr(self.config, "header_timeout_s", None)
        return float(value) if value is not None else _header_timeout_from_env()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout_s(), self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        # A request's headers were parsed (a new cycle), or a protocol upgrade hands the connection over.
        if self.cycle is not cycle or self.conn.their_state in (h11.MIGHT_SWITCH_PROTOCOL, h11.SWITCHED_PROTOCOL):
            self._disarm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The connection becomes a WebSocket (/v1/ws) before h11 leaves SEND_BODY: no header deadline from here on.
        self._disarm()
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        # Armed first: uvicorn parses a pipelined request inside on_response_complete, and that disarms it again.
        if not self.transport.is_closing():
            self._arm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_options(config: SegmentorConfig) -> dict[str, Any]:
    """``uvicorn.Config`` / ``uvicorn.run`` keyword arguments for the connection limits of ``config.server``."""
    server = config.server
    return {
        "http": HeaderTimeoutH11Protocol,
        "timeout_keep_alive": server.keep_alive_timeout_s,
        "limit_concurrency": server.max_connections,
        "h11_max_incomplete_event_size": server.max_header_bytes,
        "ws_max_size": server.max_body_bytes,  # /v1/ws messages: the same bound as a request body
    }
