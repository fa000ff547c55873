"""Low-resolution mask logits as JSON, for click refinement over REST (``return_logits`` / ``mask_input`` on
``/v1/segment/points`` and ``/v1/segment/box``); the service and the Python client share this codec.

A response asked with ``return_logits: true`` carries ``low_res_logits = {"size": L, "data": base64}``: the mask's
``[L, L]`` float32 logits (``L`` = 256 for Meta's models, 128 for ``demo``), little-endian, row-major. A follow-up
request passes that object back unchanged as ``mask_input`` together with all the object's points, and gets the
SDK's refinement (``segment_from_points(..., mask_input=previous.low_res_logits)``): float32 travels exactly, so the
masks are the same.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError

__all__ = ["decode_logits", "encode_logits"]

_DTYPE = np.dtype("<f4")


def encode_logits(logits: np.ndarray) -> dict[str, Any]:
    """``{"size": L, "data": base64}`` of float32 ``[L, L]`` logits.

    Raises:
        InvalidInputError: not a square ``[L, L]`` array.
    """
    array = np.ascontiguousarray(logits, dtype=_DTYPE)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise InvalidInputError(f"mask_input must be square [L, L] logits, got shape {list(array.shape)}")
    return {"size": int(array.shape[0]), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_logits(size: int, data: str) -> np.ndarray:
    """float32 ``[size, size]`` logits from their base64 text.

    Raises:
        InvalidInputError: ``data`` is not base64, or not ``size * size`` float32 values (the SDK then checks that
            ``size`` is the model's and that every value is finite).
    """
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("mask_input.data is not valid base64") from None
    expected = size * size * _DTYPE.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"mask_input.data holds {len(raw)} bytes; a {size}x{size} float32 array is {expected} bytes "
            "(pass back a response's low_res_logits unchanged)"
        )
    return np.frombuffer(raw, dtype=_DTYPE).reshape(size, size).astype(np.float32)
