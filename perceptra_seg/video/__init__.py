"""Video object tracking with SAM 2 / 2.1: frame sources, prompts and sessions (see ``docs/video.md``).

``open_frames`` and ``VideoPrompt`` need only numpy, Pillow and (for video files) PyAV; ``VideoSession`` and the
model need the ``torch`` extra and are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .frames import FrameSource, open_frames
from .prompts import VideoPrompt

if TYPE_CHECKING:
    from .session import VideoSession

__all__ = ["FrameSource", "VideoPrompt", "VideoSession", "open_frames"]


def __getattr__(name: str) -> Any:
    if name == "VideoSession":
        from .session import VideoSession

        return VideoSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
