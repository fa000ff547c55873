"""Mask converters: one small function per output format, plus area, bbox and small-region cleanup.

A mask is a 2-D array ``[H, W]`` (rows = ``y``, columns = ``x``); any dtype is accepted and nonzero means
foreground; non-contiguous views are fine. Functions that return masks return ``bool [H, W]``.

Polygons follow the pixel-corner convention documented in :mod:`perceptra_seg.utils.polygons`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.utils.polygons import as_mask, mask_to_polygons, polygons_to_coco, polygons_to_mask

if TYPE_CHECKING:
    from perceptra_seg.config import OutputsConfig

__all__ = [
    "OUTPUT_FORMATS",
    "JsonOutputFormat",
    "OutputFormat",
    "bbox_xyxy_to_xywh",
    "encode_mask",
    "encode_outputs",
    "mask_area",
    "mask_bbox",
    "mask_to_png",
    "mask_to_polygons",
    "mask_to_rle",
    "png_to_mask",
    "polygons_to_coco",
    "polygons_to_mask",
    "remove_small_regions",
    "resolve_formats",
    "rle_to_mask",
    "validate_formats",
]

#: Mask encodings that can travel as JSON (REST bodies): every output format but ``numpy``.
JsonOutputFormat = Literal["rle", "png", "polygons"]
#: Output formats a caller may ask for; :func:`encode_mask` fills the matching ``SegmentationResult`` fields.
OutputFormat = Literal["numpy", JsonOutputFormat]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
_FORMAT_KEYS = {"numpy": "mask", "rle": "rle", "png": "png_bytes", "polygons": "polygons"}


def mask_to_rle(mask: Any, *, compressed: bool = True) -> dict[str, Any]:
    """COCO run-length encoding of a mask ``[H, W]``.

    Runs are counted in column-major (Fortran) order and start with the background run (0 when the first pixel
    is foreground). Returns ``{"size": [H, W], "counts": str}`` (pycocotools' compressed string) or, with
    ``compressed=False``, ``{"size": [H, W], "counts": [int, ...]}`` (what ``frPyObjects`` accepts).
    """
    m = as_mask(mask)
    height, width = m.shape
    if not compressed:
        flat = m.ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        edges = np.concatenate(([0], change, [flat.size]))
        runs = np.diff(edges).tolist()
        if flat[0]:
            runs.insert(0, 0)
        return {"size": [int(height), int(width)], "counts": [int(r) for r in runs]}
    counts = mask_utils.encode(np.asfortranarray(m, dtype=np.uint8))["counts"]  # always bytes
    return {"size": [int(height), int(width)], "counts": counts.decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode COCO RLE (compressed ``str``/``bytes`` counts or an uncompressed ``list[int]``) to bool ``[H, W]``.

    The run lengths are parsed and validated here (non-negative, summing to ``H * W``), so a malformed RLE is an
    :class:`InvalidInputError` (pycocotools' C decoder does not bounds-check), and expanded with numpy in the same
    column-major order pycocotools uses.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InvalidInputError("RLE must be a dict with 'size' [H, W] and 'counts'")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(isinstance(s, (int, np.integer)) for s in size):
        raise InvalidInputError(f"RLE 'size' must be [H, W] integers; got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"RLE size must be positive; got {[height, width]}")
    counts = rle["counts"]
    if isinstance(counts, (list, tuple, np.ndarray)):
        runs = [int(c) for c in counts]
        if any(c < 0 for c in runs):
            raise InvalidInputError("RLE counts must be non-negative")
    elif isinstance(counts, (str, bytes)):
        runs = _parse_compressed_counts(counts.decode("latin-1") if isinstance(counts, bytes) else counts)
    else:
        raise InvalidInputError(f"RLE 'counts' must be str, bytes or a list of ints; got {type(counts).__name__}")
    if sum(runs) != height * width:
        raise InvalidInputError(f"RLE counts sum to {sum(runs)}, expected H * W = {height * width}")
    values = np.arange(len(runs)) % 2 == 1  # runs alternate background / foreground, background first
    flat = np.repeat(values, runs)
    return np.ascontiguousarray(flat.reshape(width, height).T)


def _parse_compressed_counts(text: str) -> list[int]:
    """Parse pycocotools' compressed counts string (6-bit groups, sign bit, deltas from run i-2 for i > 2)."""
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise InvalidInputError("truncated compressed RLE counts")
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                raise InvalidInputError(f"invalid character {text[pos]!r} in compressed RLE counts")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos += 1
            shift += 5
            if not more and code & 0x10:
                value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise InvalidInputError("negative run length in compressed RLE counts")
        runs.append(value)
    return runs


def mask_to_png(mask: Any, *, bit_depth: int = 1) -> bytes:
    """Single-channel PNG of a mask ``[H, W]``: ``bit_depth=1`` (mode ``"1"``) or ``8`` (mode ``"L"``, 0/255)."""
    m = as_mask(mask)
    if bit_depth == 1:
        img = Image.fromarray(np.ascontiguousarray(m)).convert("1")
    elif bit_depth == 8:
        img = Image.fromarray(np.ascontiguousarray(m, dtype=np.uint8) * np.uint8(255), mode="L")
    else:
        raise InvalidInputError(f"PNG bit_depth must be 1 or 8; got {bit_depth!r}")
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def png_to_mask(data: bytes) -> np.ndarray:
    """Decode a mask PNG (any bit depth / mode; converted to grey) to bool ``[H, W]``, nonzero = foreground."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as img:
            img.load()
            if img.mode == "1":
                return np.array(img, dtype=bool)
            gray = img if img.mode in ("L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F") else img.convert("L")
            return np.asarray(gray) != 0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"not a valid mask PNG: {exc}") from None


def mask_area(mask: Any) -> int:
    """Number of foreground pixels."""
    return int(np.count_nonzero(as_mask(mask)))


def mask_bbox(mask: Any) -> tuple[int, int, int, int]:
    """Foreground box ``(x1, y1, x2, y2)`` with ``x2``/``y2`` exclusive; ``(0, 0, 0, 0)`` for an empty mask."""
    m = as_mask(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(m.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def bbox_xyxy_to_xywh(bbox: Sequence[float]) -> list[float]:
    """``(x1, y1, x2, y2)`` -> ``[x, y, width, height]`` as floats (COCO's bbox form)."""
    if len(bbox) != 4:
        raise InvalidInputError(f"bbox must have 4 values (x1, y1, x2, y2); got {len(bbox)}")
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return [x1, y1, x2 - x1, y2 - y1]


def remove_small_regions(mask: Any, *, min_area: int, mode: Literal["holes", "islands"]) -> np.ndarray:
    """Clean a mask ``[H, W]``; returns bool ``[H, W]``.

    ``mode="islands"`` removes foreground components (8-connected) with fewer than ``min_area`` pixels — all of
    them if all are small. ``mode="holes"`` fills holes (8-connected background components that do not touch the
    image border) with fewer than ``min_area`` pixels. ``min_area <= 0`` returns the mask unchanged.

    Only the foreground's bounding box (plus one pixel of background on each side) is labelled: every island and
    every hole lies inside it, and background touching that frame also reaches the outside, so the result equals
    labelling the whole image at the cost of the mask's extent, not the image's.
    """
    if mode not in ("holes", "islands"):
        raise InvalidInputError(f"mode must be 'holes' or 'islands'; got {mode!r}")
    m = as_mask(mask)
    out = m.copy()
    if min_area <= 0 or not m.any():
        return out
    x1, y1, x2, y2 = mask_bbox(m)
    y0, x0 = max(y1 - 1, 0), max(x1 - 1, 0)
    crop = m[y0 : y2 + 1, x0 : x2 + 1]
    work = ~crop if mode == "holes" else crop
    _, labels, stats, _ = cv2.connectedComponentsWithStats(work.astype(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_area
    small[0] = False  # label 0 is the other class
    if mode == "holes":
        frame = np.concatenate((labels[0], labels[-1], labels[:, 0], labels[:, -1]))
        small[np.unique(frame)] = False
        out[y0 : y2 + 1, x0 : x2 + 1] |= small[labels]
    else:
        out[y0 : y2 + 1, x0 : x2 + 1] &= ~small[labels]
    return out


def validate_formats(formats: Sequence[str] | str) -> tuple[OutputFormat, ...]:
    """Lower-case, strip and de-duplicate output format names (order kept); unknown names are an error.

    The one check of format names: config loading (``outputs.formats``) and every request
    (:class:`~perceptra_seg.requests.SegmentRequest`) call it; :func:`encode_mask` takes its result.
    """
    if isinstance(formats, str):
        items: list[object] = [formats]
    elif isinstance(formats, (bytes, Mapping)):  # iterable, but not a list of names (a dict's keys, byte values)
        raise InvalidInputError(f"output formats must be a list of names; got {type(formats).__name__}")
    else:
        try:
            items = list(formats)
        except TypeError:
            raise InvalidInputError(f"output formats must be a list of names; got {formats!r}") from None
    seen: list[OutputFormat] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInputError(f"output format names must be strings; got {item!r}")
        name = item.strip().lower()
        if name not in OUTPUT_FORMATS:
            raise _unknown_format(item)
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def _unknown_format(name: object) -> InvalidInputError:
    return InvalidInputError(f"unknown output format {name!r}; valid formats: {', '.join(OUTPUT_FORMATS)}")


def encode_mask(
    mask: Any,
    formats: Sequence[OutputFormat],
    *,
    rle_compressed: bool = True,
    png_bit_depth: int = 1,
    polygon_tolerance: float = 0.0,
    polygon_min_area: float = 0.0,
) -> dict[str, Any]:
    """Encode one mask ``[H, W]`` in the formats named (as :func:`validate_formats` returns them).

    Returns a dict whose keys are the ``SegmentationResult`` fields of the requested formats: ``"mask"`` (bool
    ``[H, W]``, C-contiguous, for ``numpy``), ``"rle"``, ``"png_bytes"``, ``"polygons"``.

    Raises:
        InvalidInputError: a name that is not an output format (names are not normalised here).
    """
    m = as_mask(mask)
    encoders: dict[str, Any] = {
        "numpy": lambda: np.array(m, dtype=bool, order="C", copy=True),
        "rle": lambda: mask_to_rle(m, compressed=rle_compressed),
        "png": lambda: mask_to_png(m, bit_depth=png_bit_depth),
        "polygons": lambda: mask_to_polygons(m, tolerance=polygon_tolerance, min_area=polygon_min_area),
    }
    out: dict[str, Any] = {}
    for name in formats:
        if name not in encoders:
            raise _unknown_format(name)
        out[_FORMAT_KEYS[name]] = encoders[name]()
    return out


def resolve_formats(formats: Sequence[OutputFormat] | None, outputs: OutputsConfig) -> tuple[OutputFormat, ...]:
    """A request's output formats (already checked by :func:`validate_formats`), or ``outputs.formats`` (checked
    when the config loaded)."""
    return tuple(formats) if formats is not None else tuple(cast(list[OutputFormat], outputs.formats))


def encode_outputs(mask: Any, formats: Sequence[OutputFormat], outputs: OutputsConfig) -> dict[str, Any]:
    """:func:`encode_mask` with the options of the ``outputs`` config section."""
    return encode_mask(
        mask,
        formats,
        rle_compressed=outputs.rle_compressed,
        png_bit_depth=outputs.png_bit_depth,
        polygon_tolerance=outputs.polygon_tolerance,
        polygon_min_area=outputs.polygon_min_area,
    )
