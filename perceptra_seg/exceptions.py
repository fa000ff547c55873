"""The exception tree of perceptra-seg.

Every error the package raises on purpose derives from :class:`SegmentorError`, so callers can catch one type.
Each class carries the HTTP status the REST service answers with, so the mapping lives in one place::

    SegmentorError
    ├── InvalidInputError        400  bad image bytes, bad prompt, out-of-range coordinates, bad argument,
    │                                 an image too elongated for the model input
    │   └── ImageTooLargeError   413  image over the pixel or byte limit (checked before decoding pixels)
    ├── NotFoundError            404  an embedded image id that is unknown or was evicted from the cache
    ├── ConfigError              400  unknown or invalid configuration key/value
    ├── ModelLoadError           503  checkpoint missing, truncated, wrong hash, wrong architecture
    ├── BackendError             500  the inference backend failed for a reason that is not the caller's input
    │   └── BackendUnavailableError 503  a remote backend (Triton server) cannot be reached or did not answer in time
    ├── ResourceExhaustedError   503  queue full, out of (GPU) memory
    └── AuthError                401  missing or invalid credentials
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "ImageTooLargeError",
    "InvalidInputError",
    "ModelLoadError",
    "NotFoundError",
    "ResourceExhaustedError",
    "SegmentorError",
]


class SegmentorError(Exception):
    """Base class of every error raised by perceptra-seg."""

    http_status: int = 500
    code: str = "internal_error"


class InvalidInputError(SegmentorError, ValueError):
    """The caller's input (image, prompt, argument) is malformed or out of range."""

    http_status = 400
    code = "invalid_input"


class ImageTooLargeError(InvalidInputError):
    """The image exceeds the configured pixel or byte limit."""

    http_status = 413
    code = "image_too_large"


class NotFoundError(SegmentorError, LookupError):
    """A referenced object (e.g. an embedded image id) does not exist or has expired."""

    http_status = 404
    code = "not_found"


class ConfigError(SegmentorError, ValueError):
    """A configuration key is unknown or a value is invalid."""

    http_status = 400
    code = "invalid_config"


class ModelLoadError(SegmentorError):
    """A checkpoint could not be found, downloaded, verified or loaded."""

    http_status = 503
    code = "model_load_error"


class BackendError(SegmentorError):
    """The inference backend failed (not because of the caller's input)."""

    http_status = 500
    code = "backend_error"


class BackendUnavailableError(BackendError):
    """A remote inference server (``runtime.backend: triton``) is unreachable, gone, or missed its deadline."""

    http_status = 503
    code = "backend_unavailable"


class ResourceExhaustedError(SegmentorError):
    """A bounded resource is exhausted: request queue full, out of memory."""

    http_status = 503
    code = "resource_exhausted"


class AuthError(SegmentorError):
    """Credentials are missing or invalid."""

    http_status = 401
    code = "unauthorized"
