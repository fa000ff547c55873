"""Errors the service adds to the SDK's tree, and the one mapping from any exception to a JSON error response.

Every error body has the same shape, whatever went wrong::

    {"error": {"code": "invalid_input", "message": "box must have 4 numbers, got 3", "request_id": "5f0c..."}}

The HTTP status and ``code`` come from the exception's ``http_status`` / ``code`` attributes
(:mod:`perceptra_seg.exceptions`); errors that ask the client to come back later carry ``retry_after`` (seconds),
sent as the ``Retry-After`` header. Unexpected exceptions become a 500 ``internal_error`` whose message says
nothing about the cause (the traceback goes to the server log only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..exceptions import AuthError, ResourceExhaustedError, SegmentorError
from .request_context import current_request_id

__all__ = [
    "EmbeddingModelMismatchError",
    "ForbiddenError",
    "ModelNotReadyError",
    "PayloadTooLargeError",
    "QueueFullError",
    "RateLimitedError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "StateUnavailableError",
    "error_response",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class _RetryLater(SegmentorError):
    """An error the client may retry after ``retry_after`` seconds (sent as the ``Retry-After`` header)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ForbiddenError(AuthError):
    """Credentials were sent but are not valid."""

    http_status = 403
    code = "forbidden"


class RateLimitedError(_RetryLater):
    """The API key (or client address) exceeded its request rate."""

    http_status = 429
    code = "rate_limited"


class QueueFullError(_RetryLater, ResourceExhaustedError):
    """Every inference slot is busy and the waiting queue is full."""

    code = "queue_full"


class ModelNotReadyError(_RetryLater, ResourceExhaustedError):
    """The model is still loading (or warming up)."""

    code = "not_ready"


class RequestTimeoutError(SegmentorError):
    """Queue wait plus inference took longer than ``server.request_timeout_s``."""

    http_status = 504
    code = "timeout"


class PayloadTooLargeError(SegmentorError):
    """The request body is over ``server.max_body_bytes``."""

    http_status = 413
    code = "payload_too_large"


class RequestTooLargeError(SegmentorError):
    """More prompts, points or mask outputs than ``server.max_prompts`` / ``max_points_per_prompt`` /
    ``max_mask_outputs`` allow."""

    http_status = 413
    code = "request_too_large"


class StateUnavailableError(_RetryLater):
    """``server.state = redis``: Redis cannot be reached and this worker does not hold the requested image id (send
    the image itself instead)."""

    http_status = 503
    code = "state_unavailable"


class EmbeddingModelMismatchError(SegmentorError):
    """An image id whose shared embedding was made by another model (or device, precision, runtime) than the one
    this server runs: it cannot be used here (embed the image again)."""

    http_status = 409
    code = "model_mismatch"


def error_response(
    status: int, code: str, message: str, *, retry_after: int | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error envelope with the current request id; ``retry_after`` becomes the ``Retry-After`` header."""
    out = dict(headers or {})
    if retry_after is not None:
        out["Retry-After"] = str(max(1, int(retry_after)))
    body = {"error": {"code": code, "message": message, "request_id": current_request_id()}}
    return JSONResponse(body, status_code=status, headers=out)


def _segmentor_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SegmentorError)
    status = exc.http_status
    if status == 500:  # overload, timeouts and loading show in the request line; failures deserve their own
        logger.error("request failed: %s: %s", type(exc).__name__, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, exc.code, str(exc), retry_after=getattr(exc, "retry_after", None), headers=headers)


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "validation_error", _describe(exc.errors()))


def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


def _describe(errors: Sequence[Any]) -> str:
    """``body.box: List should have at least 4 items; body.points.0.label: ...`` (never echoes the input value)."""
    parts = []
    for error in jsonable_encoder(errors)[:10]:
        location = ".".join(str(p) for p in error.get("loc", ())) or "request"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Route SDK errors, validation errors and HTTP errors through the one envelope."""
    app.add_exception_handler(SegmentorError, _segmentor_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
