"""Model-input preparation and logit post-processing, the same for every backend (numpy, PIL and OpenCV only).

Geometry of the two families (matching Meta's reference predictors):

* SAM 1: the image is resized (PIL bilinear) so its longest side is 1024, normalised with ImageNet statistics in
  0..255 units, and padded bottom/right to 1024×1024. Prompt coordinates scale per axis by ``new_w / W`` and
  ``new_h / H``. Logits go 256 → 1024 → crop to the resized size → ``H×W``.
* SAM 2: the image (as float in 0..1) is resized to 1024×1024 with an antialiased bilinear filter and normalised.
  Coordinates scale by ``1024 / W`` and ``1024 / H``. Logits go 256 → ``H×W`` directly.

All resizes of logits are bilinear with half-pixel centres (PyTorch's ``align_corners=False``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .exceptions import InvalidInputError
from .registry import Family

__all__ = [
    "INPUT_SIZE",
    "SAM1_PIXEL_MEAN",
    "SAM1_PIXEL_STD",
    "bilinear_taps",
    "logits_to_mask",
    "mask_and_stability",
    "preprocess_image",
    "resized_input_size",
    "transform_coords",
]

INPUT_SIZE = 1024

#: SAM 1's RGB normalisation (Meta's ``pixel_mean`` / ``pixel_std``, in 0..255 units).
SAM1_PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
SAM1_PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
_SAM2_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_SAM2_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resized_input_size(original_size: tuple[int, int], family: Family) -> tuple[int, int]:
    """``(h, w)`` of the image inside the 1024 input: longest side 1024 (rounded half up) for SAM 1, else 1024²
    (SAM 2; SAM 3's tracker, whose backend rescales that square to its own 1008 input).

    Raises:
        InvalidInputError: SAM 1 and an image so elongated (beyond 2048:1) that its short side rounds to 0 pixels.
    """
    if family in ("sam2", "sam3"):
        return INPUT_SIZE, INPUT_SIZE
    height, width = original_size
    scale = INPUT_SIZE / max(height, width)
    resized = int(height * scale + 0.5), int(width * scale + 0.5)
    if min(resized) == 0:
        raise InvalidInputError(
            f"image of {width}x{height} pixels is too elongated for SAM 1: its short side would vanish when the long "
            f"side is resized to {INPUT_SIZE} (aspect ratios up to {2 * INPUT_SIZE}:1 are accepted)"
        )
    return resized


def preprocess_image(image: np.ndarray, family: Family) -> tuple[np.ndarray, tuple[int, int]]:
    """Turn an RGB uint8 ``[H, W, 3]`` image into the encoder input.

    Returns:
        ``(pixel_values, input_size)``: float32 ``[1, 3, 1024, 1024]`` (NCHW) and the resized ``(h, w)``.
    """
    input_h, input_w = resized_input_size(image.shape[:2], family)
    pixels = np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    if family == "sam1":
        resized = np.asarray(Image.fromarray(image).resize((input_w, input_h), Image.Resampling.BILINEAR))
        channels = [resized[:, :, c] for c in range(3)]
        mean, std = SAM1_PIXEL_MEAN, SAM1_PIXEL_STD
    else:
        channels = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32) / 255.0, mode="F").resize(
                    (INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR
                )
            )
            for c in range(3)
        ]
        mean, std = _SAM2_MEAN, _SAM2_STD
    # Normalised channel by channel straight into the padded NCHW array (float32 arithmetic, no float HWC copies).
    for c, channel in enumerate(channels):
        plane = pixels[0, c, : channel.shape[0], : channel.shape[1]]
        np.subtract(channel, mean[c], out=plane, dtype=np.float32)
        plane /= std[c]
    return pixels, (input_h, input_w)


def transform_coords(coords: np.ndarray, original_size: tuple[int, int], family: Family) -> np.ndarray:
    """Map ``(x, y)`` pairs from original-image pixels to the 1024 input frame.

    Args:
        coords: float array ``[..., 2]`` of ``(x, y)`` (boxes as ``[..., 2, 2]`` corner pairs work too).
        original_size: ``(H, W)`` of the original image.

    Returns:
        float32 array of the same shape.
    """
    height, width = original_size
    input_h, input_w = resized_input_size(original_size, family)
    scale = np.array([input_w / width, input_h / height], dtype=np.float64)
    return (np.asarray(coords, dtype=np.float64) * scale).astype(np.float32)


def bilinear_taps(out_len: int, in_len: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0``, ``i1`` and weight of ``i1`` for bilinear sampling (half-pixel centres, PyTorch's
    ``align_corners=False``) of output positions ``start..stop-1`` along one axis of length ``in_len → out_len``."""
    src = np.maximum((np.arange(start, stop, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resample(src: np.ndarray, out_size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of float32 ``src [h, w]`` to ``out_size``, evaluated only on ``rows × cols`` (half-open)."""
    row0, row1, row_weight = bilinear_taps(out_size[0], src.shape[0], *rows)
    col0, col1, col_weight = bilinear_taps(out_size[1], src.shape[1], *cols)
    row_weight = row_weight[:, None]
    blended_rows = src[row0] * (1.0 - row_weight) + src[row1] * row_weight
    return np.asarray(blended_rows[:, col0] * (1.0 - col_weight) + blended_rows[:, col1] * col_weight, dtype=np.float32)


def _span(out_len: int, in_len: int, first: int, last: int) -> tuple[int, int]:
    """Half-open range of output positions whose bilinear taps ``i0``/``i1`` touch source indices ``first..last``.

    Both taps are non-decreasing in the output position, so the positions form one contiguous run. When the resize
    shrinks (``out_len < in_len``: an image smaller than the logits' frame) consecutive outputs skip source indices,
    and a narrow source region can lie between two outputs' taps: then no output sees it and the span is empty,
    ``(0, 0)`` — exactly what resizing the whole array would give there (nothing above the threshold).
    """
    i0, i1, _ = bilinear_taps(out_len, in_len, 0, out_len)
    hit = np.flatnonzero((i1 >= first) & (i0 <= last))
    if hit.size == 0:
        return 0, 0
    return int(hit[0]), int(hit[-1]) + 1


def logits_to_mask(
    low_res_logits: np.ndarray,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    family: Family,
    threshold: float = 0.0,
) -> np.ndarray:
    """Upsample one mask's logits to the original image and threshold them, touching only where the mask can be.

    A bilinear sample is a convex combination of its source taps, so it can exceed ``threshold`` only next to a
    source value that does. The full-resolution logits are therefore evaluated only inside the bounding region of
    the source's above-threshold values (plus one tap), which keeps a 100-megapixel image at the cost of its mask.
    An image smaller than the logits' frame samples them at spaced taps; when every tap misses the above-threshold
    values the mask is empty, as the whole-array resize would be.

    Args:
        low_res_logits: float32 ``[L, L]`` (256 for Meta's models) in the 1024-input frame.
        original_size: ``(H, W)`` of the original image.
        input_size: ``(h, w)`` of the resized image inside the 1024 input (:attr:`ImageEmbedding.input_size`).
        threshold: logit threshold (SAM's own is 0).

    Returns:
        bool ``[H, W]``, identical to ``resize(logits) > threshold`` computed over the whole image.
    """
    mask, _ = mask_and_stability(low_res_logits, original_size, input_size, family, threshold, 0.0)
    return mask


def mask_and_stability(
    low_res_logits: np.ndarray,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    family: Family,
    threshold: float,
    offset: float,
) -> tuple[np.ndarray, float]:
    """:func:`logits_to_mask` plus the mask's stability score, from one evaluation of the upsampled logits.

    The stability score is ``count(logits > threshold + offset) / count(logits > threshold - offset)`` over the
    upsampled logits (the definition of Meta's automatic mask generators); NaN when no value exceeds
    ``threshold - offset`` or when ``offset`` is 0 (not asked for). The logits are evaluated only where a value can
    exceed the lowest of the levels.

    Returns:
        ``(mask, stability)``: bool ``[H, W]`` and a float in ``[0, 1]`` or NaN.
    """
    height, width = original_size
    mask = np.zeros((height, width), dtype=bool)
    offset = abs(offset)
    source = np.ascontiguousarray(low_res_logits, dtype=np.float32)
    if family == "sam1":  # 256 → 1024, then crop away the padding
        full = (INPUT_SIZE, INPUT_SIZE)
        source = _resample(source, full, (0, input_size[0]), (0, input_size[1]))
    above = source > threshold - offset
    if not above.any():
        return mask, float("nan")
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    r0, r1 = _span(height, source.shape[0], int(rows[0]), int(rows[-1]))
    c0, c1 = _span(width, source.shape[1], int(cols[0]), int(cols[-1]))
    if r0 == r1 or c0 == c1:  # every output's taps miss the above-level values: nothing exceeds any level
        return mask, float("nan")
    values = _resample(source, (height, width), (r0, r1), (c0, c1))
    mask[r0:r1, c0:c1] = values > threshold
    if offset == 0.0:
        return mask, float("nan")
    union = np.count_nonzero(values > threshold - offset)
    inter = np.count_nonzero(values > threshold + offset)
    return mask, float(np.float32(inter) / np.float32(union)) if union else float("nan")
