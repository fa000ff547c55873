"""Turn any supported image source into one canonical array: RGB ``uint8``, shape ``[H, W, 3]``, C-contiguous.

Rows are ``y`` (height) and columns are ``x`` (width), so pixel ``(x, y)`` is ``image[y, x]``. Everything downstream
(prompts, masks, caching) works on this array only.

Sources accepted by :func:`load_image`:

* ``numpy.ndarray`` — see :func:`array_to_rgb` for the dtype and shape rules;
* ``PIL.Image.Image`` — see :func:`pil_to_rgb_array` for the mode rules;
* ``os.PathLike`` — a local file;
* ``bytes`` / ``bytearray`` / ``memoryview`` — encoded image bytes;
* ``str`` — interpreted in this order: a ``data:`` URI (base64), an ``http://`` / ``https://`` URL (only when
  ``allow_urls=True``), the path of an existing file (only when ``allow_paths=True``), and finally bare base64. If
  none fits, :class:`~perceptra_seg.exceptions.InvalidInputError` says what was tried.

Decoding (:mod:`perceptra_seg.utils.image_decode`) goes through Pillow with a format allow-list
(:data:`ALLOWED_FORMATS`), a pixel limit and a decode-memory limit in bytes, both checked from the header before any
pixel is decoded. Pillow's process-wide settings (``MAX_IMAGE_PIXELS``,
``LOAD_TRUNCATED_IMAGES``) are never changed; Pillow's own decompression-bomb error is reported as
:class:`~perceptra_seg.exceptions.ImageTooLargeError` as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import urllib.parse
from typing import Any

import httpx
import numpy as np
from PIL import Image

from perceptra_seg.exceptions import ImageTooLargeError, InvalidInputError
from perceptra_seg.utils.image_decode import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    INPUT_DEFAULTS,
    array_to_rgb,
    check_pixels,
    decode_image_bytes,
    decode_stream,
    pil_to_rgb_array,
)
from perceptra_seg.utils.url_download import download_image_body, url_origin

__all__ = [
    "ALLOWED_FORMATS",
    "array_to_rgb",
    "decode_image_bytes",
    "fetch_url",
    "image_digest",
    "load_image",
    "pil_to_rgb_array",
]

_MAX_PATH_LEN = 4096
_B64_WHITESPACE = " \t\r\n\f\v"


def load_image(
    source: Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_urls: bool = False,
    url_timeout_s: float = INPUT_DEFAULTS.url_timeout_s,
    max_bytes: int = INPUT_DEFAULTS.max_bytes,
    http_client: httpx.Client | None = None,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    allow_paths: bool = True,
) -> np.ndarray:
    """Decode and validate an image from any supported source (see the module docstring for the ``str`` order).

    Args:
        source: ndarray, PIL image, path (``str`` or ``os.PathLike``), encoded bytes, base64 string (optionally a
            ``data:image/...;base64,`` URI) or an ``http(s)`` URL string.
        max_pixels: largest accepted ``H * W``; checked from the file header before decoding.
        allow_urls: whether ``http(s)`` URL strings are fetched; when ``False`` they are an error.
        url_timeout_s: connect/read timeout and overall deadline of a URL download, in seconds.
        max_bytes: largest accepted encoded payload (bytes, decoded base64, URL body). Local files are bounded by
            ``max_pixels`` and ``max_decode_bytes`` only.
        http_client: optional ``httpx.Client`` used for URLs (e.g. one with an SSRF-guarding transport).
        max_decode_bytes: largest accepted memory estimate of decoding an encoded image (Pillow's image, decoder
            buffer, RGB result; see :func:`~perceptra_seg.utils.image_decode.decode_memory_estimate`), checked from
            the header before decoding. Arrays and PIL images are already in memory and are bounded by
            ``max_pixels`` only.
        allow_paths: whether a ``str`` or ``os.PathLike`` may name a local file. ``False`` for text that comes from
            a network peer (the REST service): such text is a data: URI, a URL or base64, never a path.

    Returns:
        RGB ``uint8`` array ``[H, W, 3]``, C-contiguous. A ``uint8`` ``[H, W, 3]`` C-contiguous input array is
        returned as is (no copy).

    Raises:
        InvalidInputError: unsupported source type, bad data, missing file, URLs disabled, fetch failure.
        ImageTooLargeError: over ``max_pixels``, ``max_bytes`` or ``max_decode_bytes``.
    """
    limits = _Limits(max_pixels, max_decode_bytes)
    if isinstance(source, np.ndarray):
        return array_to_rgb(source, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        check_pixels(source.width, source.height, max_pixels)
        return pil_to_rgb_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), max_bytes, "image bytes")
        return limits.decode(data)
    if isinstance(source, os.PathLike):
        if not allow_paths:
            raise InvalidInputError("local image paths are not accepted here; send the image bytes instead")
        return _load_path(os.fspath(source), limits)
    if isinstance(source, str):
        return _load_str(source, limits, max_bytes, allow_urls, url_timeout_s, http_client, allow_paths)
    raise InvalidInputError(
        f"unsupported image source of type {type(source).__name__}: expected a numpy array, PIL image, path, bytes, "
        "base64 string or URL"
    )


class _Limits:
    """The two decode limits, passed together to every path that decodes."""

    def __init__(self, max_pixels: int, max_decode_bytes: int) -> None:
        self.max_pixels = max_pixels
        self.max_decode_bytes = max_decode_bytes

    def decode(self, data: bytes) -> np.ndarray:
        return decode_image_bytes(data, max_pixels=self.max_pixels, max_decode_bytes=self.max_decode_bytes)


def _load_str(
    text: str,
    limits: _Limits,
    max_bytes: int,
    allow_urls: bool,
    url_timeout_s: float,
    http_client: httpx.Client | None,
    allow_paths: bool,
) -> np.ndarray:
    stripped = text.strip()
    if stripped[:5].lower() == "data:":
        header, sep, payload = stripped.partition(",")
        if not sep or not header.lower().endswith(";base64"):
            raise InvalidInputError("data: URI must have the form 'data:image/<type>;base64,<payload>'")
        data = _b64decode(payload, max_bytes=max_bytes)
        return limits.decode(data)
    if is_url(stripped):
        parse_image_url(stripped)  # a malformed URL says so, whether or not URLs are allowed
        if not allow_urls:
            raise InvalidInputError("URL image sources are disabled (allow_urls=False); send the image bytes instead")
        body = fetch_url(stripped, timeout_s=url_timeout_s, max_bytes=max_bytes, client=http_client)
        return limits.decode(body)
    if not allow_paths:  # text from a peer: base64 it must be, and its error says why not
        return limits.decode(_b64decode(stripped, max_bytes=max_bytes))
    if len(text) <= _MAX_PATH_LEN and os.path.isfile(text):
        return _load_path(text, limits)
    try:
        data = _b64decode(stripped, max_bytes=max_bytes)
    except ImageTooLargeError:
        raise
    except InvalidInputError:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidInputError(
            f"could not interpret string image source {shown!r}: it is not a data: URI, not an http(s) URL, "
            "no file exists at that path, and it is not valid base64"
        ) from None
    return limits.decode(data)


def _load_path(path: str, limits: _Limits) -> np.ndarray:
    if not os.path.isfile(path):
        raise InvalidInputError(f"image file not found: {path!r}")
    try:
        with open(path, "rb") as fp:
            return decode_stream(fp, max_pixels=limits.max_pixels, max_decode_bytes=limits.max_decode_bytes)
    except OSError as exc:  # permission denied, I/O error; decode errors are already SegmentorErrors
        raise InvalidInputError(f"cannot read image file {path!r}: {exc}") from exc


def _b64decode(payload: str, *, max_bytes: int) -> bytes:
    """Decode standard or URL-safe base64, padding optional, whitespace ignored; size checked before decoding."""
    n_chars = len(payload) - sum(payload.count(ch) for ch in _B64_WHITESPACE)
    if n_chars * 3 // 4 > max_bytes:
        raise ImageTooLargeError(
            f"base64 payload decodes to about {n_chars * 3 // 4} bytes, over the {max_bytes} limit"
        )
    compact = "".join(payload.split())
    if not compact:
        raise InvalidInputError("empty base64 payload")
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"invalid base64 image data: {exc}") from None
    _check_bytes(len(data), max_bytes, "decoded base64 payload")
    return data


def is_url(text: str) -> bool:
    """Whether request text is an ``http(s)://`` URL (case-insensitive, leading blanks ignored)."""
    head = text.lstrip()[:8].lower()  # lstrip copies nothing when there is nothing to strip
    return head.startswith(("http://", "https://"))


def parse_image_url(text: str) -> httpx.URL:
    """The URL in ``text``, checked the way both :mod:`urllib.parse` and httpx read it.

    Raises:
        InvalidInputError: the URL cannot be parsed, has no host, a bad port, or a scheme other than http(s).
    """
    stripped = text.strip()
    shown = stripped if len(stripped) <= 100 else stripped[:97] + "..."
    try:
        parts = urllib.parse.urlsplit(stripped)
        _ = parts.port  # raises ValueError for a port that is not a number in 0..65535
        url = httpx.URL(stripped)
    except (ValueError, httpx.InvalidURL) as exc:
        raise InvalidInputError(f"invalid image URL {shown!r}: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise InvalidInputError(f"invalid image URL {shown!r}: only http and https are allowed")
    if not parts.hostname or not url.host:
        raise InvalidInputError(f"invalid image URL {shown!r}: no host")
    return url


def fetch_url(url: str, *, timeout_s: float, max_bytes: int, client: httpx.Client | None = None) -> bytes:
    """Download ``url`` with a streaming GET and return the body.

    Only ``http`` and ``https`` are accepted. ``timeout_s`` is the connect/read/write timeout and also the deadline
    for the whole download: when it passes, the connection is shut down, even in the middle of a response header
    that trickles in byte by byte (:func:`~perceptra_seg.utils.url_download.download_image_body`). The body is
    capped at ``max_bytes``: a larger ``Content-Length`` is refused up front and the download stops as soon as more
    than ``max_bytes`` arrive. Redirects are not followed by the client created here (a 3xx answer is an error); an
    injected ``client`` (for instance one with an SSRF-guarding transport) keeps its own redirect policy and
    per-operation timeouts.

    Raises:
        InvalidInputError: bad scheme or URL, non-2xx status, timeout, network error.
        ImageTooLargeError: body over ``max_bytes``.
    """
    parsed = parse_image_url(url)
    where = url_origin(parsed)
    own_client = client is None
    http = httpx.Client(follow_redirects=False, timeout=httpx.Timeout(timeout_s)) if client is None else client

    def too_late(_: str) -> InvalidInputError:
        return InvalidInputError(f"timed out after {timeout_s:g} s fetching image from {where} (whole download)")

    try:
        return download_image_body(http, parsed, max_bytes=max_bytes, deadline_s=timeout_s, deadline_error=too_late)
    finally:
        if own_client:
            http.close()


def image_digest(image: np.ndarray) -> str:
    """Hex SHA-256 of ``shape``, ``dtype`` and the C-order pixel bytes (the embedding cache key of an image)."""
    hasher = hashlib.sha256()
    hasher.update(f"{tuple(int(s) for s in image.shape)}|{image.dtype.str}|".encode())
    hasher.update(np.ascontiguousarray(image).reshape(-1).view(np.uint8).data)
    return hasher.hexdigest()


def _check_bytes(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise ImageTooLargeError(f"{what} is {size} bytes, over the {max_bytes} limit")
