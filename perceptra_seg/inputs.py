"""The input policy of a :class:`~perceptra_seg.Segmentor`: which image sources it accepts and the limits every
decode obeys. It is the only place an image enters the SDK, so each image is decoded and validated exactly once.

The SDK's default comes from the ``input`` config section and accepts every source (arrays, PIL images, paths,
bytes, base64, and URLs when ``input.allow_urls``). A front end that takes images from network peers narrows it:
the REST service passes ``allow_paths=False`` (text is base64 or a data: URI, never a server file) and
``allow_urls=False`` (it downloads URLs itself, before admission, and hands over the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import httpx
import numpy as np

from .config import InputConfig
from .utils.image_io import load_image

__all__ = ["InputPolicy"]


@dataclass(frozen=True)
class InputPolicy:
    """What :meth:`load` accepts and how much it may cost.

    Attributes:
        max_pixels: largest ``H * W``, checked from the header before decoding.
        max_bytes: largest encoded payload (bytes, decoded base64, URL body).
        max_decode_bytes: largest memory estimate of one decode, checked from the header.
        allow_urls: fetch ``http(s)`` URL strings (else they are an error).
        url_timeout_s: connect/read timeout and whole-download deadline of a URL, in seconds.
        allow_paths: a ``str`` / ``os.PathLike`` may name a local file.
        http_client: client used for URLs (e.g. one whose transport refuses private addresses); ``None`` makes a
            plain one per download.
    """

    max_pixels: int
    max_bytes: int
    max_decode_bytes: int
    allow_urls: bool
    url_timeout_s: float
    allow_paths: bool = True
    http_client: httpx.Client | None = None

    @classmethod
    def from_config(cls, limits: InputConfig, **overrides: Any) -> InputPolicy:
        """The policy of an ``input`` config section, with ``overrides`` (e.g. ``allow_paths=False``) applied."""
        policy = cls(
            max_pixels=limits.max_pixels,
            max_bytes=limits.max_bytes,
            max_decode_bytes=limits.max_decode_bytes,
            allow_urls=limits.allow_urls,
            url_timeout_s=limits.url_timeout_s,
        )
        return replace(policy, **overrides)

    def load(self, source: Any) -> np.ndarray:
        """Decode and validate ``source`` (see :func:`~perceptra_seg.utils.image_io.load_image`).

        Returns:
            RGB ``uint8`` ``[H, W, 3]``, C-contiguous (rows are ``y``, columns ``x``).

        Raises:
            InvalidInputError: a source this policy refuses, or bad data.
            ImageTooLargeError: over a limit.
        """
        return load_image(
            source,
            max_pixels=self.max_pixels,
            max_bytes=self.max_bytes,
            max_decode_bytes=self.max_decode_bytes,
            allow_urls=self.allow_urls,
            url_timeout_s=self.url_timeout_s,
            http_client=self.http_client,
            allow_paths=self.allow_paths,
        )
