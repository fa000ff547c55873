"""Errors of the Python client: the service's JSON error envelope mapped back onto the SDK's exception tree.

The service answers every error as ``{"error": {"code", "message", "request_id"}}`` with an HTTP status
(:mod:`perceptra_seg.service.errors`). :func:`error_from_response` raises the SDK class that stands for ``code``
(``invalid_input`` → :class:`~perceptra_seg.exceptions.InvalidInputError`, ``not_found`` →
:class:`~perceptra_seg.exceptions.NotFoundError`, ...), so code written against the SDK catches the same types
whether it runs in process or through the client. Every raised error carries ``status_code``, ``code``,
``request_id`` and ``retry_after`` (seconds or ``None``) as attributes.

Client-only classes (the service's own classes live in its FastAPI modules, which the client does not import)::

    RateLimitedError(ResourceExhaustedError)     429 rate_limited
    RequestTooLargeError(InvalidInputError)      413 payload_too_large / request_too_large
    RequestTimeoutError(SegmentorError)          504 timeout / url_timeout, or the client's own timeout
    ServiceConnectionError(SegmentorError)       the server could not be reached
"""

from __future__ import annotations

from typing import Any

from ..cancel import OperationCancelledError
from ..exceptions import (
    AuthError,
    BackendError,
    BackendUnavailableError,
    ConfigError,
    ImageTooLargeError,
    InvalidInputError,
    ModelLoadError,
    NotFoundError,
    ResourceExhaustedError,
    SegmentorError,
)

__all__ = [
    "RateLimitedError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ServiceConnectionError",
    "error_from_response",
]


class RateLimitedError(ResourceExhaustedError):
    """The API key exceeded the server's request rate (HTTP 429; ``retry_after`` says when to come back)."""

    http_status = 429
    code = "rate_limited"


class RequestTooLargeError(InvalidInputError):
    """The body, or the prompts / points / mask outputs it asks for, is over the server's limits (HTTP 413)."""

    http_status = 413
    code = "request_too_large"


class RequestTimeoutError(SegmentorError):
    """The server's request deadline passed (HTTP 504), or no answer came within the client's ``timeout``."""

    http_status = 504
    code = "timeout"


class ServiceConnectionError(SegmentorError):
    """The server could not be reached (connection refused, reset, DNS failure)."""

    http_status = 503
    code = "connection_error"


#: Error code of the envelope → the class raised for it.
_BY_CODE: dict[str, type[SegmentorError]] = {
    "invalid_input": InvalidInputError,
    "validation_error": InvalidInputError,
    "bad_request": InvalidInputError,
    "url_not_allowed": InvalidInputError,
    "no_image": InvalidInputError,
    "invalid_message": InvalidInputError,
    "image_too_large": ImageTooLargeError,
    "payload_too_large": RequestTooLargeError,
    "request_too_large": RequestTooLargeError,
    "not_found": NotFoundError,
    "invalid_config": ConfigError,
    "model_load_error": ModelLoadError,
    "backend_error": BackendError,
    "backend_unavailable": BackendUnavailableError,
    "internal_error": BackendError,
    "resource_exhausted": ResourceExhaustedError,
    "queue_full": ResourceExhaustedError,
    "not_ready": ResourceExhaustedError,
    "unavailable": ResourceExhaustedError,
    "rate_limited": RateLimitedError,
    "unauthorized": AuthError,
    "forbidden": AuthError,
    "timeout": RequestTimeoutError,
    "url_timeout": RequestTimeoutError,
    "request_timeout": RequestTimeoutError,
    "cancelled": OperationCancelledError,
}

#: HTTP status → the class raised when the code is unknown (a newer server) or the body is not the envelope.
_BY_STATUS: dict[int, type[SegmentorError]] = {
    400: InvalidInputError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    408: RequestTimeoutError,
    413: RequestTooLargeError,
    422: InvalidInputError,
    429: RateLimitedError,
    503: ResourceExhaustedError,
    504: RequestTimeoutError,
}


def error_from_response(status: int, body: Any, retry_after: float | None) -> SegmentorError:
    """The exception for an error answer: ``status`` (HTTP), ``body`` (the parsed JSON, or ``None`` when it was
    not JSON) and ``retry_after`` (the ``Retry-After`` header in seconds, or ``None``)."""
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict):
        code = str(envelope.get("code", "http_error"))
        message = str(envelope.get("message", ""))
        request_id = envelope.get("request_id")
    else:
        code, message, request_id = "http_error", f"HTTP {status} without an error body", None
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (InvalidInputError if 400 <= status < 500 else BackendError)
    error = cls(f"{message} (HTTP {status}, {code})")
    error.code = code
    error.status_code = status  # type: ignore[attr-defined]
    error.request_id = request_id  # type: ignore[attr-defined]
    error.retry_after = retry_after  # type: ignore[attr-defined]
    return error
