"""Per-request context (request id, route, prompt count, cache hit) and the outermost middleware that fills it.

:class:`RequestContextMiddleware` is a plain ASGI middleware. For every HTTP request it

* takes the client's ``X-Request-ID`` when it is a short token of safe characters, otherwise makes a new id, and
  returns it in the ``X-Request-ID`` response header (error bodies carry it too);
* measures the latency and records ``segmentor_http_requests_total`` / ``..._duration_seconds`` by route template
  (``/v1/segment/box``, never the raw path) and status;
* writes one ``request`` log record: request id, method, route, status, latency, prompt count, cache hit, client
  address and API key id (a hash prefix, never the key) — no body, no query string, no header values;
* turns an exception that escaped every handler into a JSON 500 without a traceback (the traceback is logged).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .request_context import (
    RequestContext,
    bind_context,
    current_context,
    current_request_id,
    unbind_context,
)

if TYPE_CHECKING:
    from .metrics import ServiceMetrics

__all__ = ["RequestContext", "RequestContextMiddleware", "current_context", "current_request_id"]

logger = logging.getLogger("perceptra_seg.service.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SAFE_REQUEST_ID.match(text) else None
    return None


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    """Outermost middleware: request id, access log, HTTP metrics, last-resort 500."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(request_id=_incoming_request_id(scope) or uuid.uuid4().hex)
        token = bind_context(context)
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                MutableHeaders(scope=message).append("X-Request-ID", context.request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": context.request_id})
            if started:
                raise
            await error_response(500, "internal_error", "internal server error")(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.observe_request(method, route, status, elapsed)
            logger.info("request", extra=_log_fields(context, scope, method, route, status, elapsed))
            unbind_context(token)


def _log_fields(
    context: RequestContext, scope: Scope, method: str, route: str, status: int, elapsed: float
) -> dict[str, Any]:
    client = scope.get("client")
    return {
        "request_id": context.request_id,
        "method": method,
        "route": route,
        "status": status,
        "latency_ms": round(elapsed * 1000.0, 3),
        "prompts": context.prompts,
        "cache_hit": context.cache_hit,
        "key_id": context.key_id,
        "client": client[0] if client else None,
    }
