"""An :class:`~perceptra_seg.backends.base.ImageEmbedding` as bytes, for the shared state in Redis.

Layout: ``b"PSE1"``, a little-endian ``uint32`` header length, a JSON header, then each feature array's raw bytes
(C order, little-endian) one after another. The header holds the model fingerprint the embedding was made with,
``original_size`` / ``input_size`` as ``(H, W)``, the kind of features (``torch`` tensors, ``numpy`` arrays, or
``none`` for backends without features) and each array's shape, dtype and byte count.

Features are every array the backend produced — for SAM 2 the image embedding **and** its high-resolution feature
levels — stored as ``float32`` (exact) or ``float16`` (half the bytes; an array whose values do not fit float16's
range, |x| > 65504, stays float32). They are read back as ``float32``, the dtype every backend encodes to.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..backends.base import ImageEmbedding
from ..exceptions import InvalidInputError

__all__ = ["StoredDtype", "StoredEmbedding", "pack", "packed_nbytes", "unpack"]

StoredDtype = Literal["float32", "float16"]

_MAGIC = b"PSE1"
_HEADER_LEN = struct.Struct("<I")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class StoredEmbedding:
    """A decoded record: the fingerprint it was made with and the embedding (features rebuilt by
    :meth:`embedding`)."""

    fingerprint: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    kind: str
    arrays: tuple[np.ndarray, ...]
    nbytes: int

    def embedding(self, device: Any = None) -> ImageEmbedding:
        """The :class:`ImageEmbedding`; ``torch`` features become float32 tensors on ``device`` (CPU if ``None``)."""
        features: Any
        if self.kind == "none":
            features = None
        elif self.kind == "torch":
            import torch

            features = tuple(torch.from_numpy(array).to(device or "cpu") for array in self.arrays)
        else:
            features = self.arrays
        return ImageEmbedding(self.original_size, self.input_size, features=features, nbytes=self.nbytes)


def _arrays(features: Any) -> tuple[str, list[np.ndarray]]:
    """``(kind, float32 arrays)`` of a backend's features (a tensor or array, or a tuple/list of them, or None)."""
    if features is None:
        return "none", []
    items = list(features) if isinstance(features, (tuple, list)) else [features]
    kind = "numpy"
    arrays = []
    for item in items:
        if not isinstance(item, np.ndarray):  # a torch tensor (imported only by backends that make them)
            kind = "torch"
            item = item.detach().float().cpu().numpy()
        arrays.append(np.ascontiguousarray(item, dtype=np.float32))
    return kind, arrays


def _stored(array: np.ndarray, dtype: StoredDtype) -> np.ndarray:
    if dtype == "float16" and (array.size == 0 or float(np.abs(array).max()) <= _FLOAT16_MAX):
        return array.astype("<f2")
    return array.astype("<f4")


def packed_nbytes(embedding: ImageEmbedding, dtype: StoredDtype) -> int:
    """Bytes of the arrays :func:`pack` would write (the header adds well under a kilobyte)."""
    features = embedding.features
    items = [] if features is None else list(features) if isinstance(features, (tuple, list)) else [features]
    width = 2 if dtype == "float16" else 4
    return sum(int(item.size if isinstance(item, np.ndarray) else item.numel()) * width for item in items)


def pack(embedding: ImageEmbedding, *, fingerprint: str, dtype: StoredDtype) -> bytes:
    """``embedding`` (made by the model with ``fingerprint``) as one bytes value."""
    kind, arrays = _arrays(embedding.features)
    stored = [_stored(array, dtype) for array in arrays]
    header = {
        "fingerprint": fingerprint,
        "original_size": list(embedding.original_size),
        "input_size": list(embedding.input_size),
        "kind": kind,
        "nbytes": embedding.nbytes,
        "arrays": [{"shape": list(a.shape), "dtype": a.dtype.str, "nbytes": a.nbytes} for a in stored],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_MAGIC, _HEADER_LEN.pack(len(head)), head, *(a.tobytes() for a in stored)])


def unpack(data: bytes) -> StoredEmbedding:
    """Read a value written by :func:`pack`.

    Raises:
        InvalidInputError: not such a value (another writer's key, or a truncated value).
    """
    try:
        if not data.startswith(_MAGIC):
            raise ValueError("no PSE1 marker")
        (length,) = _HEADER_LEN.unpack_from(data, len(_MAGIC))
        start = len(_MAGIC) + _HEADER_LEN.size
        header = json.loads(data[start : start + length])
        offset = start + length
        arrays = []
        for spec in header["arrays"]:
            raw = np.frombuffer(data, dtype=np.dtype(spec["dtype"]), count=int(np.prod(spec["shape"])), offset=offset)
            arrays.append(raw.reshape(spec["shape"]).astype(np.float32))
            offset += int(spec["nbytes"])
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} bytes left over")
        return StoredEmbedding(
            fingerprint=str(header["fingerprint"]),
            original_size=(int(header["original_size"][0]), int(header["original_size"][1])),
            input_size=(int(header["input_size"][0]), int(header["input_size"][1])),
            kind=str(header["kind"]),
            arrays=tuple(arrays),
            nbytes=int(header["nbytes"]),
        )
    except (ValueError, KeyError, IndexError, TypeError, struct.error) as exc:
        raise InvalidInputError(f"stored embedding is unreadable: {exc}") from None
