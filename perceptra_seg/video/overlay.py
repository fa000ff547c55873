"""An overlay video (mp4): every tracked frame with each object's mask blended in its own colour.

:class:`OverlayVideoWriter` encodes with PyAV (H.264 ``libx264``, ``yuv420p``; MPEG-4 part 2 where the FFmpeg build
lacks libx264), one video frame per tracked frame, in the order the frames were tracked (so a ``reverse`` run plays
backwards). Frames are encoded as they arrive; nothing but the encoder's own look-ahead is held.

* Colour of object ``k``: :func:`object_color` — the DAVIS palette entry ``k`` for ids 1..255 (the same colour the
  palette PNGs show), a golden-ratio hue for larger ids. Masked pixels become ``(1 - alpha) * pixel + alpha *
  colour`` (``alpha`` = 0.5); where masks overlap the smallest id is drawn (as in the palette PNGs).
* Frame rate: the source's (``FrameSource.fps``), 30 when the source has none (a folder of images, arrays).
* ``yuv420p`` needs even sides: an odd width or height is padded by repeating the last column / row.

The file is written under a temporary name beside the target and renamed when :meth:`OverlayVideoWriter.close`
succeeds.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.utils.atomic import atomic_write
from perceptra_seg.utils.masks import rle_to_mask
from perceptra_seg.utils.overlay import mask_color

from .outputs import FrameResults
from .palette import MAX_OBJECT_ID, davis_palette

__all__ = ["DEFAULT_FPS", "OverlayVideoWriter", "blend_objects", "object_color"]

#: Frame rate of the overlay when the source does not have one.
DEFAULT_FPS = 30.0
_ALPHA = 0.5
_CODECS = ("libx264", "mpeg4")
_PALETTE = davis_palette()


def object_color(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of object ``obj_id``: its DAVIS palette entry (ids 1..255), else a golden-ratio hue."""
    if 1 <= obj_id <= MAX_OBJECT_ID:
        r, g, b = _PALETTE[3 * obj_id : 3 * obj_id + 3]
        return (r, g, b)
    return mask_color(obj_id)


def blend_objects(frame: np.ndarray, results: FrameResults, *, alpha: float = _ALPHA) -> np.ndarray:
    """``frame`` (uint8 ``[H, W, 3]`` RGB) with each object's mask blended in :func:`object_color`.

    Raises:
        InvalidInputError: a mask of another size than the frame, a result with neither mask nor rle.
    """
    canvas = np.array(frame, dtype=np.uint8, copy=True)
    height, width = canvas.shape[:2]
    claimed = np.zeros((height, width), dtype=bool)
    for obj_id in sorted(results):  # a pixel shows the smallest id covering it, blended once
        result = results[obj_id]
        if result.mask is not None:
            mask = np.asarray(result.mask, dtype=bool)
        elif result.rle is not None:
            mask = rle_to_mask(result.rle)
        else:
            raise InvalidInputError(f"object {obj_id} has neither a 'numpy' nor an 'rle' output")
        if mask.shape != (height, width):
            raise InvalidInputError(f"mask of object {obj_id} has shape {list(mask.shape)}; expected {[height, width]}")
        color = np.array(object_color(int(obj_id)), dtype=np.float64)
        mask = mask & ~claimed
        claimed |= mask
        canvas[mask] = np.rint(canvas[mask].astype(np.float64) * (1.0 - alpha) + color * alpha).astype(np.uint8)
    return canvas


def _codec() -> str:
    import av

    for name in _CODECS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # not in this FFmpeg build
            continue
        return name
    raise InvalidInputError(f"this FFmpeg build (PyAV) can encode none of {', '.join(_CODECS)}")


class OverlayVideoWriter:
    """Encode overlay frames into an mp4 file (see the module docstring).

    Args:
        path: the ``.mp4`` file (its folder must exist).
        size: ``(H, W)`` of the video's frames.
        fps: frame rate; ``None`` = :data:`DEFAULT_FPS`.

    Use as a context manager (the file is kept only when the block succeeds) or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, size: tuple[int, int], fps: float | None = None) -> None:
        import av

        self.path = Path(path)
        self.size = size
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        self.written = 0
        height, width = size
        self._padded = (height + height % 2, width + width % 2)
        self._file = atomic_write(self.path, suffix=".mp4")
        handle = self._file.__enter__()
        self._container: Any = cast(Any, av.open(handle, mode="w", format="mp4"))
        codec = _codec()
        rate = Fraction(self.fps).limit_denominator(100_000)
        self._stream: Any = cast(Any, self._container.add_stream(codec, rate=rate))
        self._stream.width, self._stream.height = self._padded[1], self._padded[0]
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": "18", "preset": "veryfast"}
        self._closed = False

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.discard(kind, exc, tb)

    def add(self, frame: np.ndarray, results: FrameResults) -> None:
        """Blend ``results`` into ``frame`` (uint8 ``[H, W, 3]`` RGB) and encode it as the next video frame."""
        import av

        if frame.shape[:2] != self.size:
            raise InvalidInputError(f"frame has shape {list(frame.shape[:2])}; expected {list(self.size)}")
        picture = blend_objects(frame, results)
        pad_rows, pad_cols = self._padded[0] - self.size[0], self._padded[1] - self.size[1]
        if pad_rows or pad_cols:
            picture = np.pad(picture, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        video_frame.pts = self.written
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.written += 1

    def close(self) -> None:
        """Flush the encoder, finish the mp4 and rename it into place."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException as exc:
            self._file.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._file.__exit__(None, None, None)

    def discard(
        self,
        kind: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Stop without keeping the file (after a failure)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # the partial file is thrown away anyway
            self._container.close()
        failure = exc if exc is not None else InvalidInputError("overlay video discarded")
        try:
            self._file.__exit__(kind or type(failure), failure, tb)
        except BaseException as raised:
            if raised is not failure:
                raise
