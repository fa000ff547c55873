"""Decode encoded images and convert pixels to RGB ``uint8`` ``[H, W, 3]``, with memory bounded in bytes.

Decoding checks two limits from the file header, before any pixel is decoded: ``max_pixels`` (``W * H``) and
``max_decode_bytes``, an estimate of the most memory the decode can hold at once (:func:`decode_memory_estimate`:
Pillow's decoded image, the decoder's own buffer, the RGB result, one conversion block). The conversion to RGB
works through blocks of rows, so high-bit-depth pixels never exist as whole-image ``int64`` / ``float64`` copies:
the peak is Pillow's image plus the result, not several times the result.
"""

from __future__ import annotations

import io
import logging
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from perceptra_seg.config import InputConfig
from perceptra_seg.exceptions import ImageTooLargeError, InvalidInputError, ResourceExhaustedError, SegmentorError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "array_to_rgb",
    "check_pixels",
    "decode_image_bytes",
    "decode_memory_estimate",
    "decode_stream",
    "pil_to_rgb_array",
]

logger = logging.getLogger(__name__)

#: Pillow format names that may be decoded. Everything else (GIF, ICO, PSD, EPS, ...) is refused.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")

#: The ``input`` section's defaults, defined once in :class:`~perceptra_seg.config.InputConfig`.
INPUT_DEFAULTS = InputConfig()
#: Default ``input.max_pixels`` (100 megapixels).
DEFAULT_MAX_PIXELS = INPUT_DEFAULTS.max_pixels
#: Default ``input.max_decode_bytes``: 1 GiB, enough for a 100-megapixel 8-bit RGB image (about 0.75 GB).
DEFAULT_MAX_DECODE_BYTES = INPUT_DEFAULTS.max_decode_bytes

#: Pixels converted per block: its float64 temporaries stay near 8 MB each.
_BLOCK_PIXELS = 1 << 20
#: Memory of one conversion block (a few float64 temporaries of :data:`_BLOCK_PIXELS`, the block's crop).
_BLOCK_BYTES = 8 * 8 * _BLOCK_PIXELS
_EXIF_ORIENTATION = 0x0112
#: Bytes per pixel of Pillow's in-memory image, by mode (multi-band modes are stored 4 bytes a pixel).
_PILLOW_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I": 4, "F": 4}
# TIFF tags read for the decoder's buffer size.
_TIFF_BITS, _TIFF_SAMPLES, _TIFF_ROWS_PER_STRIP, _TIFF_TILE_W, _TIFF_TILE_H = 258, 277, 278, 322, 323


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise :class:`ImageTooLargeError` when ``width * height`` is over ``max_pixels``."""
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image is {width}x{height} = {width * height} pixels, over the {max_pixels} limit")


def decode_image_bytes(data: bytes, *, max_pixels: int, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> np.ndarray:
    """Decode encoded image bytes into RGB ``uint8`` ``[H, W, 3]``.

    Only :data:`ALLOWED_FORMATS` are decoded. ``width * height`` is checked against ``max_pixels`` and the decode's
    memory estimate against ``max_decode_bytes`` from the header, before the pixel data is decoded. The EXIF
    orientation is applied (so the array is upright), and for multi-frame files (animated WebP, multi-page TIFF)
    the first frame is returned. Pillow's own bomb guard still applies on top of ``max_pixels`` (it refuses more
    than ``2 * Image.MAX_IMAGE_PIXELS`` and warns above ``MAX_IMAGE_PIXELS``); it is reported as
    :class:`ImageTooLargeError` and never reconfigured here.

    Raises:
        InvalidInputError: not an image, a format outside the allow-list (named in the message), truncated or
            corrupt data.
        ImageTooLargeError: over ``max_pixels``, ``max_decode_bytes`` or Pillow's decompression-bomb limit.
    """
    return decode_stream(io.BytesIO(data), max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)


def decode_stream(fp: BinaryIO, *, max_pixels: int, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> np.ndarray:
    """:func:`decode_image_bytes` for an open binary file."""
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
        check_pixels(img.width, img.height, max_pixels)
        estimate = decode_memory_estimate(img)
        if estimate > max_decode_bytes:
            raise ImageTooLargeError(
                f"decoding this {img.width}x{img.height} {img.format} image (mode {img.mode}) needs about "
                f"{estimate} bytes of memory, over the input.max_decode_bytes limit of {max_decode_bytes} bytes"
            )
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
        orientation = _exif_orientation(img)
        rgb = pil_to_rgb_array(img)
    return _orient(rgb, orientation)


def decode_memory_estimate(img: Image.Image) -> int:
    """Worst-case bytes a decode of the opened (not yet loaded) ``img`` holds at once, from its header.

    The sum of Pillow's decoded image (1 byte a pixel for ``1``/``L``/``P``, 2 for ``I;16*``, 4 otherwise), the
    decoder's own buffer (TIFF: one strip or tile of raw samples; WebP: an RGBA frame and its copy; JPEG, PNG and
    BMP decode row by row), the ``uint8`` RGB result (3 bytes a pixel) and one conversion block.
    """
    pixels = img.width * img.height
    pillow = pixels * (2 if img.mode.startswith("I;16") else _PILLOW_PIXEL_BYTES.get(img.mode, 4))
    return pillow + _decoder_buffer(img) + 3 * pixels + _BLOCK_BYTES


def _decoder_buffer(img: Image.Image) -> int:
    if img.format == "WEBP":  # libwebp's RGBA frame and the bytes copy Pillow loads it from
        return 8 * img.width * img.height
    if img.format != "TIFF":
        return 0
    tags = getattr(img, "tag_v2", {})
    bits = tags.get(_TIFF_BITS, 8)
    bits_per_pixel = int(sum(bits) if isinstance(bits, tuple) else bits * int(tags.get(_TIFF_SAMPLES, 1)))
    if _TIFF_TILE_W in tags and _TIFF_TILE_H in tags:
        return -(-int(tags[_TIFF_TILE_W]) * int(tags[_TIFF_TILE_H]) * bits_per_pixel // 8)
    rows = min(int(tags.get(_TIFF_ROWS_PER_STRIP, img.height)), img.height)
    return rows * -(-img.width * bits_per_pixel // 8)


def _identify_format(fp: BinaryIO) -> str | None:
    """Name the format of data the allow-list refused (header parse only, pixels are never decoded)."""
    try:
        fp.seek(0)
        with Image.open(fp) as probe:
            return probe.format
    except Exception:  # identification is best effort, for the error message only
        return None


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception as exc:  # unreadable EXIF must not make a decodable image unusable
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an ``[H, W, 3]`` array upright for an EXIF orientation value (1..8), as ``ImageOps.exif_transpose``."""
    if orientation == 1:
        return rgb
    views = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180°
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.transpose(1, 0, 2),  # transposed (mirror about the main diagonal)
        6: lambda a: a[::-1].transpose(1, 0, 2),  # stored rotated 90° counter-clockwise: turn it clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transversed (mirror about the anti-diagonal)
        8: lambda a: a[:, ::-1].transpose(1, 0, 2),  # stored rotated 90° clockwise: turn it counter-clockwise
    }
    return np.ascontiguousarray(views[orientation](rgb))


def _row_blocks(height: int, width: int) -> range:
    return range(0, height, max(1, _BLOCK_PIXELS // max(width, 1)))


def pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to RGB ``uint8`` ``[H, W, 3]`` (C-contiguous), block of rows by block.

    Rules, by mode:

    * ``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow ``convert("RGB")``
      (``P`` with a ``transparency`` entry goes through ``RGBA``);
    * ``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``: converted to ``RGBA`` (``La``/``RGBa`` un-premultiplied by Pillow)
      and the alpha channel is **dropped** — colours are kept as stored, nothing is composited onto a background;
    * ``I;16`` family (unsigned 16 bit): ``round(value / 257)``, which maps 0..65535 exactly onto 0..255;
    * ``I`` (int32): clipped to 0..65535, then ``round(value / 257)`` (``I`` is how 16-bit files often arrive);
    * ``F`` (float32): NaN becomes 0; if the largest value is <= 1.0 the data are taken as ``[0, 1]``: clipped to
      ``[0, 1]`` and ``round(value * 255)``; otherwise clipped to ``[0, 255]`` and rounded (+inf counts as large);
    * single-channel results are replicated to 3 channels.

    Every rule maps pixels one by one, so converting a block of rows at a time gives the whole-image result while
    only the block's temporaries exist besides ``img`` and the output.

    Raises:
        InvalidInputError: a mode Pillow cannot convert to RGB, or a zero-sized image.
    """
    width, height = img.width, img.height
    if width == 0 or height == 0:
        raise InvalidInputError(f"image has zero size ({width}x{height})")
    mode = img.mode
    out = np.empty((height, width, 3), dtype=np.uint8)
    blocks = _row_blocks(height, width)
    step = blocks.step

    def block(top: int) -> Image.Image:
        return img.crop((0, top, width, min(top + step, height)))

    if mode.startswith("I;16") or mode == "I":
        for top in blocks:
            values = np.asarray(block(top))
            if mode == "I":
                values = np.clip(values, 0, 65535)
            out[top : top + step] = _scale_uint16(values)[:, :, None]
    elif mode == "F":
        unit = max(float(np.nan_to_num(np.asarray(block(top)), nan=0.0).max()) for top in blocks) <= 1.0
        for top in blocks:
            values = np.nan_to_num(np.asarray(block(top), dtype=np.float64), nan=0.0)
            scaled = np.clip(values, 0.0, 1.0) * 255.0 if unit else np.clip(values, 0.0, 255.0)
            out[top : top + step] = np.rint(scaled).astype(np.uint8)[:, :, None]
    else:
        with_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in img.info)
        try:
            for top in blocks:
                part = block(top)
                if with_alpha:
                    out[top : top + step] = np.asarray(part.convert("RGBA"))[:, :, :3]
                else:
                    out[top : top + step] = np.asarray(part if mode == "RGB" else part.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise InvalidInputError(f"cannot convert image mode {mode!r} to RGB: {exc}") from None
    return out


def _scale_uint16(values: np.ndarray) -> np.ndarray:
    """``round(v / 257)`` for integers in 0..65535 (no ties are possible since 257 is odd), in 32-bit arithmetic."""
    wide = values.astype(np.int32)
    return ((2 * wide + 257) // 514).astype(np.uint8)


def array_to_rgb(array: np.ndarray, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Validate a numpy image and convert it to RGB ``uint8`` ``[H, W, 3]`` (C-contiguous).

    Shapes: ``[H, W]`` and ``[H, W, 1]`` (grey, replicated), ``[H, W, 3]`` (RGB), ``[H, W, 4]`` (RGBA; alpha
    dropped). Channel order is taken to be RGB. Dtypes: ``uint8`` as is; ``uint16`` as ``round(value / 257)``;
    floating point must lie in ``[0, 1]`` (no NaN/inf) and becomes ``round(value * 255)`` (half to even); ``bool``
    becomes 0/255. Anything else is an :class:`InvalidInputError`. Conversions run block of rows by block, so no
    whole-image ``float64`` or ``int32`` copy is made.
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
    check_pixels(width, height, max_pixels)
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        if channels.shape[2] == 3:
            return np.ascontiguousarray(channels)
        out = np.empty((height, width, 3), dtype=np.uint8)
        out[...] = channels
        return out
    if kind == "f":
        blocks = _row_blocks(height, width)
        for top in blocks:
            part = channels[top : top + blocks.step]
            if not np.all(np.isfinite(part)):
                raise InvalidInputError("float image array contains NaN or infinite values")
        lo, hi = float(channels.min()), float(channels.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidInputError(f"float image values must lie in [0, 1]; got range [{lo:g}, {hi:g}]")
    elif not (kind == "b" or (kind == "u" and array.dtype.itemsize == 2)):  # uint16 of either byte order
        raise InvalidInputError(f"unsupported image dtype {array.dtype}: use uint8, uint16, bool or float in [0, 1]")
    out = np.empty((height, width, 3), dtype=np.uint8)
    blocks = _row_blocks(height, width)
    for top in blocks:
        part = channels[top : top + blocks.step]
        if kind == "b":
            out[top : top + blocks.step] = part.astype(np.uint8) * np.uint8(255)
        elif kind == "u":
            out[top : top + blocks.step] = _scale_uint16(part)
        else:
            out[top : top + blocks.step] = np.rint(part.astype(np.float64) * 255.0).astype(np.uint8)
    return out
