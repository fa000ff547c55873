"""Turn any supported image source into one canonical array: RGB ``uint8``, shape ``[H, W, 3]``, C-contiguous.

Rows are ``y`` (height) and columns are ``x`` (width), so pixel ``(x, y)`` is ``image[y, x]``. Everything downstream
(prompts, masks, caching) works on this array only.

Sources accepted by :func:`load_image`:

* ``numpy.ndarray`` — see :func:`array_to_rgb` for the dtype and shape rules;
* ``PIL.Image.Image`` — see :func:`pil_to_rgb_array` for the mode rules;
* ``os.PathLike`` — a local file;
* ``bytes`` / ``bytearray`` / ``memoryview`` — encoded image bytes;
* ``str`` — interpreted in this order: a ``data:`` URI (base64), an ``http://`` / ``https://`` URL (only when
  ``allow_urls=True``), the path of an existing file, and finally bare base64. If none fits,
  :class:`~perceptra_seg.exceptions.InvalidInputError` says what was tried.

Decoding goes through Pillow with a format allow-list (:data:`ALLOWED_FORMATS`) and a pixel limit checked from the
header before any pixel is decoded. Pillow's process-wide settings (``MAX_IMAGE_PIXELS``,
``LOAD_TRUNCATED_IMAGES``) are never changed; Pillow's own decompression-bomb error is reported as
:class:`~perceptra_seg.exceptions.ImageTooLargeError` as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import os
import time
import urllib.parse
from typing import Any, BinaryIO

import httpx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from perceptra_seg.exceptions import ImageTooLargeError, InvalidInputError, ResourceExhaustedError, SegmentorError

__all__ = [
    "ALLOWED_FORMATS",
    "array_to_rgb",
    "decode_image_bytes",
    "fetch_url",
    "image_digest",
    "load_image",
    "pil_to_rgb_array",
]

logger = logging.getLogger(__name__)

#: Pillow format names that may be decoded. Everything else (GIF, ICO, PSD, EPS, ...) is refused.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")

_DEFAULT_MAX_PIXELS = 100_000_000
_DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_MAX_PATH_LEN = 4096
_B64_WHITESPACE = " \t\r\n\f\v"
_EXIF_ORIENTATION = 0x0112


def load_image(
    source: Any,
    *,
    max_pixels: int = _DEFAULT_MAX_PIXELS,
    allow_urls: bool = False,
    url_timeout_s: float = 10.0,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    http_client: httpx.Client | None = None,
) -> np.ndarray:
    """Decode and validate an image from any supported source (see the module docstring for the ``str`` order).

    Args:
        source: ndarray, PIL image, path (``str`` or ``os.PathLike``), encoded bytes, base64 string (optionally a
            ``data:image/...;base64,`` URI) or an ``http(s)`` URL string.
        max_pixels: largest accepted ``H * W``; checked from the file header before decoding.
        allow_urls: whether ``http(s)`` URL strings are fetched; when ``False`` they are an error.
        url_timeout_s: connect/read timeout and overall deadline of a URL download, in seconds.
        max_bytes: largest accepted encoded payload (bytes, decoded base64, URL body). Local files are bounded by
            ``max_pixels`` only.
        http_client: optional ``httpx.Client`` used for URLs (e.g. one with an SSRF-guarding transport).

    Returns:
        RGB ``uint8`` array ``[H, W, 3]``, C-contiguous. A ``uint8`` ``[H, W, 3]`` C-contiguous input array is
        returned as is (no copy).

    Raises:
        InvalidInputError: unsupported source type, bad data, missing file, URLs disabled, fetch failure.
        ImageTooLargeError: over ``max_pixels`` or ``max_bytes``.
    """
    if isinstance(source, np.ndarray):
        return array_to_rgb(source, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels)
        return pil_to_rgb_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), max_bytes, "image bytes")
        return decode_image_bytes(data, max_pixels=max_pixels)
    if isinstance(source, os.PathLike):
        return _load_path(os.fspath(source), max_pixels=max_pixels)
    if isinstance(source, str):
        return _load_str(source, max_pixels, max_bytes, allow_urls, url_timeout_s, http_client)
    raise InvalidInputError(
        f"unsupported image source of type {type(source).__name__}: expected a numpy array, PIL image, path, bytes, "
        "base64 string or URL"
    )


def _load_str(
    text: str, max_pixels: int, max_bytes: int, allow_urls: bool, url_timeout_s: float, http_client: httpx.Client | None
) -> np.ndarray:
    stripped = text.strip()
    if stripped[:5].lower() == "data:":
        header, sep, payload = stripped.partition(",")
        if not sep or not header.lower().endswith(";base64"):
            raise InvalidInputError("data: URI must have the form 'data:image/<type>;base64,<payload>'")
        data = _b64decode(payload, max_bytes=max_bytes)
        return decode_image_bytes(data, max_pixels=max_pixels)
    if stripped[:7].lower() == "http://" or stripped[:8].lower() == "https://":
        if not allow_urls:
            raise InvalidInputError("URL image sources are disabled (allow_urls=False); send the image bytes instead")
        body = fetch_url(stripped, timeout_s=url_timeout_s, max_bytes=max_bytes, client=http_client)
        return decode_image_bytes(body, max_pixels=max_pixels)
    if len(text) <= _MAX_PATH_LEN and os.path.isfile(text):
        return _load_path(text, max_pixels=max_pixels)
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
    return decode_image_bytes(data, max_pixels=max_pixels)


def _load_path(path: str, *, max_pixels: int) -> np.ndarray:
    if not os.path.isfile(path):
        raise InvalidInputError(f"image file not found: {path!r}")
    try:
        with open(path, "rb") as fp:
            return _decode_stream(fp, max_pixels=max_pixels)
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


def decode_image_bytes(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode encoded image bytes into RGB ``uint8`` ``[H, W, 3]``.

    Only :data:`ALLOWED_FORMATS` are decoded. ``width * height`` is checked against ``max_pixels`` from the header,
    before the pixel data is decoded. The EXIF orientation is applied (so the array is upright), and for
    multi-frame files (animated WebP, multi-page TIFF) the first frame is returned. Pillow's own bomb guard still
    applies on top of ``max_pixels`` (it refuses more than ``2 * Image.MAX_IMAGE_PIXELS`` and warns above
    ``MAX_IMAGE_PIXELS``); it is reported as :class:`ImageTooLargeError` and never reconfigured here.

    Raises:
        InvalidInputError: not an image, a format outside the allow-list (named in the message), truncated or
            corrupt data.
        ImageTooLargeError: over ``max_pixels`` or Pillow's decompression-bomb limit.
    """
    return _decode_stream(io.BytesIO(data), max_pixels=max_pixels)


def _decode_stream(fp: BinaryIO, *, max_pixels: int) -> np.ndarray:
    try:
        img = Image.open(fp, formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image exceeds the decompression-bomb pixel limit: {exc}") from None
    except UnidentifiedImageError:
        fmt = _identify_format(fp)
        if fmt is not None:
            raise InvalidInputError(
                f"unsupported image format {fmt}; allowed formats: {', '.join(ALLOWED_FORMATS)}"
            ) from None
        raise InvalidInputError("data is not a recognised image (expected JPEG, PNG, WEBP, BMP or TIFF)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"corrupt image header: {exc}") from None
    with img:
        _check_pixels(img.width, img.height, max_pixels)
        try:
            img.load()
        except SegmentorError:
            raise
        except MemoryError as exc:
            raise ResourceExhaustedError("out of memory while decoding the image") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(f"image exceeds the decompression-bomb pixel limit: {exc}") from None
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
            raise InvalidInputError(f"truncated or corrupt {img.format} image: {exc}") from None
        upright = _apply_exif_orientation(img)
        return pil_to_rgb_array(upright)


def _identify_format(fp: BinaryIO) -> str | None:
    """Name the format of data the allow-list refused (header parse only, pixels are never decoded)."""
    try:
        fp.seek(0)
        with Image.open(fp) as probe:
            return probe.format
    except Exception:  # identification is best effort, for the error message only
        return None


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        if img.getexif().get(_EXIF_ORIENTATION, 1) == 1:
            return img
        upright = ImageOps.exif_transpose(img)
    except Exception as exc:  # unreadable EXIF must not make a decodable image unusable
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
        return img
    return img if upright is None else upright


def pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to RGB ``uint8`` ``[H, W, 3]`` (C-contiguous).

    Rules, by mode:

    * ``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow ``convert("RGB")``
      (``P`` with a ``transparency`` entry goes through ``RGBA``);
    * ``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``: converted to ``RGBA`` (``La``/``RGBa`` un-premultiplied by Pillow)
      and the alpha channel is **dropped** — colours are kept as stored, nothing is composited onto a background;
    * ``I;16`` family (unsigned 16 bit): ``round(value / 257)``, which maps 0..65535 exactly onto 0..255;
    * ``I`` (int32): clipped to 0..65535, then ``round(value / 257)`` (``I`` is how 16-bit files often arrive);
    * ``F`` (float32): NaN becomes 0; if the largest value is <= 1.0 the data are taken as ``[0, 1]``: clipped to
      ``[0, 1]`` and ``round(value * 255)``; otherwise clipped to ``[0, 255]`` and rounded;
    * single-channel results are replicated to 3 channels.

    Raises:
        InvalidInputError: a mode Pillow cannot convert to RGB, or a zero-sized image.
    """
    if img.width == 0 or img.height == 0:
        raise InvalidInputError(f"image has zero size ({img.width}x{img.height})")
    mode = img.mode
    if mode.startswith("I;16"):
        gray = _scale_uint16(np.asarray(img))
    elif mode == "I":
        gray = _scale_uint16(np.clip(np.asarray(img, dtype=np.int64), 0, 65535))
    elif mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        finite = values[np.isfinite(values)]
        if finite.size == 0 or float(finite.max()) <= 1.0:
            gray = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            gray = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
    else:
        try:
            if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in img.info):
                rgb = np.asarray(img.convert("RGBA"))[:, :, :3]
            else:
                rgb = np.asarray(img if mode == "RGB" else img.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise InvalidInputError(f"cannot convert image mode {mode!r} to RGB: {exc}") from None
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _scale_uint16(values: np.ndarray) -> np.ndarray:
    """``round(v / 257)`` for integers in 0..65535 (no ties are possible since 257 is odd)."""
    wide = values.astype(np.int64)
    return ((2 * wide + 257) // 514).astype(np.uint8)


def array_to_rgb(array: np.ndarray, *, max_pixels: int = _DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Validate a numpy image and convert it to RGB ``uint8`` ``[H, W, 3]`` (C-contiguous).

    Shapes: ``[H, W]`` and ``[H, W, 1]`` (grey, replicated), ``[H, W, 3]`` (RGB), ``[H, W, 4]`` (RGBA; alpha
    dropped). Channel order is taken to be RGB. Dtypes: ``uint8`` as is; ``uint16`` as ``round(value / 257)``;
    floating point must lie in ``[0, 1]`` (no NaN/inf) and becomes ``round(value * 255)`` (half to even); ``bool``
    becomes 0/255. Anything else is an :class:`InvalidInputError`.
    """
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        channels = array if array.shape[2] != 4 else array[:, :, :3]
    elif array.ndim == 2:
        channels = array[:, :, None]
    else:
        raise InvalidInputError(
            f"image array must have shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; got {list(array.shape)}"
        )
    height, width = int(array.shape[0]), int(array.shape[1])
    if height == 0 or width == 0:
        raise InvalidInputError(f"image array has zero size: {list(array.shape)}")
    _check_pixels(width, height, max_pixels)
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        out = channels
    elif kind == "u" and array.dtype.itemsize == 2:  # uint16 of either byte order
        out = _scale_uint16(channels)
    elif kind == "b":
        out = channels.astype(np.uint8) * np.uint8(255)
    elif kind == "f":
        if not np.all(np.isfinite(channels)):
            raise InvalidInputError("float image array contains NaN or infinite values")
        lo, hi = float(channels.min()), float(channels.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidInputError(f"float image values must lie in [0, 1]; got range [{lo:g}, {hi:g}]")
        out = np.rint(channels.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise InvalidInputError(f"unsupported image dtype {array.dtype}: use uint8, uint16, bool or float in [0, 1]")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out, dtype=np.uint8)


def fetch_url(url: str, *, timeout_s: float, max_bytes: int, client: httpx.Client | None = None) -> bytes:
    """Download ``url`` with a streaming GET and return the body.

    Only ``http`` and ``https`` are accepted. ``timeout_s`` is the connect/read/write timeout and also the deadline
    for the whole download. The body is capped at ``max_bytes``: a larger ``Content-Length`` is refused up front and
    the download stops as soon as more than ``max_bytes`` arrive. Redirects are not followed by the client created
    here (a 3xx answer is an error); an injected ``client`` (for instance one with an SSRF-guarding transport) keeps
    its own redirect policy.

    Raises:
        InvalidInputError: bad scheme or URL, non-2xx status, timeout, network error.
        ImageTooLargeError: body over ``max_bytes``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"only http(s) URLs with a host can be fetched; got scheme {parts.scheme!r}")
    where = f"{parts.scheme}://{parts.hostname}"
    timeout = httpx.Timeout(timeout_s)
    own_client = client is None
    http = httpx.Client(follow_redirects=False, timeout=timeout) if client is None else client
    deadline = time.monotonic() + timeout_s
    try:
        with http.stream("GET", url, timeout=timeout) as response:
            if not 200 <= response.status_code < 300:
                hint = " (redirects are not followed)" if 300 <= response.status_code < 400 else ""
                raise InvalidInputError(f"fetching image from {where} failed with HTTP {response.status_code}{hint}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
                raise ImageTooLargeError(f"image at {where} is {int(declared)} bytes, over the {max_bytes} limit")
            chunks: list[bytes] = []
            received = 0
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received > max_bytes:
                    raise ImageTooLargeError(f"image at {where} is larger than the {max_bytes} byte limit")
                if time.monotonic() > deadline:
                    raise InvalidInputError(f"fetching image from {where} took longer than {timeout_s:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.TimeoutException:
        raise InvalidInputError(f"timed out after {timeout_s:g} s fetching image from {where}") from None
    except httpx.HTTPError as exc:
        raise InvalidInputError(f"could not fetch image from {where}: {type(exc).__name__}: {exc}") from None
    finally:
        if own_client:
            http.close()


def image_digest(image: np.ndarray) -> str:
    """Hex SHA-256 of ``shape``, ``dtype`` and the C-order pixel bytes (the embedding cache key of an image)."""
    hasher = hashlib.sha256()
    hasher.update(f"{tuple(int(s) for s in image.shape)}|{image.dtype.str}|".encode())
    hasher.update(np.ascontiguousarray(image).reshape(-1).view(np.uint8).data)
    return hasher.hexdigest()


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image is {width}x{height} = {width * height} pixels, over the {max_pixels} limit")


def _check_bytes(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise ImageTooLargeError(f"{what} is {size} bytes, over the {max_bytes} limit")
