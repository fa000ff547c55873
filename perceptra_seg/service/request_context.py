"""The per-request context (request id, prompt count, cache hit, API key id), held in a context variable.

Kept apart from the middleware that fills it (:mod:`perceptra_seg.service.context`) so that the error envelope
(:mod:`perceptra_seg.service.errors`), the logger and the routes can read the request id without importing the
middleware, which itself needs the error envelope for its last-resort 500.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

__all__ = ["RequestContext", "bind_context", "current_context", "current_request_id", "unbind_context"]


@dataclass
class RequestContext:
    """What one request's log line and metrics need; routes fill ``prompts``, ``cache_hit`` and ``key_id``."""

    request_id: str
    prompts: int | None = None
    cache_hit: bool | None = None
    key_id: str | None = None


_CONTEXT: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("segmentor_request", default=None)


def current_context() -> RequestContext | None:
    """The context of the request being handled, or ``None`` outside a request."""
    return _CONTEXT.get()


def current_request_id() -> str | None:
    """The id of the request being handled, or ``None`` outside a request."""
    context = _CONTEXT.get()
    return None if context is None else context.request_id


def bind_context(context: RequestContext) -> contextvars.Token[RequestContext | None]:
    """Make ``context`` the current one; pass the returned token to :func:`unbind_context` when the request ends."""
    return _CONTEXT.set(context)


def unbind_context(token: contextvars.Token[RequestContext | None]) -> None:
    """Restore the context that was current before :func:`bind_context`."""
    _CONTEXT.reset(token)
