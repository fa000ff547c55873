"""perceptra-seg: Segment Anything (SAM 1, SAM 2 / 2.1) as an SDK, a REST service and a CLI.

Public API::

    from perceptra_seg import Segmentor
    seg = Segmentor(model="sam_v2", variant="hiera_small", device="auto")
    result = seg.segment_from_box(image, box=(x1, y1, x2, y2), output_formats=["rle"])
"""

from __future__ import annotations

from .config import SegmentorConfig
from .core import Segmentor
from .exceptions import (
    AuthError,
    BackendError,
    ConfigError,
    ImageTooLargeError,
    InvalidInputError,
    ModelLoadError,
    NotFoundError,
    ResourceExhaustedError,
    SegmentorError,
)
from .models import EmbeddedImage, Prompt, SegmentationResult

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BackendError",
    "ConfigError",
    "EmbeddedImage",
    "ImageTooLargeError",
    "InvalidInputError",
    "ModelLoadError",
    "NotFoundError",
    "Prompt",
    "ResourceExhaustedError",
    "SegmentationResult",
    "Segmentor",
    "SegmentorConfig",
    "SegmentorError",
    "__version__",
]
