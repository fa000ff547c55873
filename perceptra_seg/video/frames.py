"""Frame sources: a video file, a folder of frames, or a sequence of arrays, decoded one frame at a time.

:func:`open_frames` returns a :class:`FrameSource`; :meth:`FrameSource.frame` decodes frame ``i`` on demand as RGB
``uint8`` ``[H, W, 3]``. No source holds more than a few decoded frames: a folder reads one file per call, a video
file keeps its demuxer open and decodes forward from the nearest keyframe (PyAV), a sequence returns its items.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..exceptions import InvalidInputError

__all__ = ["FRAME_SUFFIXES", "FrameSource", "open_frames"]

#: Image files a frame folder may hold (compared case-insensitively).
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
_NUMBER = re.compile(r"(\d+)")


class FrameSource(ABC):
    """Lazily decoded frames of one video (subclasses implement ``_read``).

    Attributes:
        num_frames: number of frames.
        height, width: frame size in pixels (every frame has it).
        fps: frames per second when the source knows it (video files), else ``None``.
    """

    num_frames: int
    height: int
    width: int
    fps: float | None = None

    def __len__(self) -> int:
        return self.num_frames

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as RGB ``uint8`` ``[H, W, 3]``.

        Raises:
            InvalidInputError: ``index`` out of range, or the frame cannot be decoded or has another size.
        """
        if not 0 <= index < self.num_frames:
            raise InvalidInputError(f"frame {index} is out of range: the video has {self.num_frames} frames")
        pixels = self._read(index)
        if pixels.shape != (self.height, self.width, 3):
            raise InvalidInputError(
                f"frame {index} is {pixels.shape[1]}x{pixels.shape[0]}, "
                f"the video's frames are {self.width}x{self.height}"
            )
        return pixels

    @abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """Decode frame ``index`` (already range-checked)."""

    @abstractmethod
    def close(self) -> None:
        """Release the file handles (a closed source cannot decode again)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _rgb(array: Any, what: str) -> np.ndarray:
    pixels = np.asarray(array)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise InvalidInputError(f"{what} must be a uint8 [H, W, 3] RGB array, got {pixels.dtype} {pixels.shape}")
    return np.ascontiguousarray(pixels)


class _ArrayFrames(FrameSource):
    def __init__(self, frames: Sequence[Any]) -> None:
        if len(frames) == 0:
            raise InvalidInputError("the video has no frames")
        self._frames = frames
        first = _rgb(frames[0], "frame 0")
        self.num_frames, (self.height, self.width) = len(frames), first.shape[:2]

    def _read(self, index: int) -> np.ndarray:
        return _rgb(self._frames[index], f"frame {index}")

    def close(self) -> None:
        self._frames = ()


def _frame_number(path: Path) -> int:
    numbers = _NUMBER.findall(path.stem)
    if not numbers:
        raise InvalidInputError(f"frame file {path.name} has no number in its name (frames are ordered by it)")
    return int(numbers[-1])


class _FolderFrames(FrameSource):
    def __init__(self, folder: Path) -> None:
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
        if not files:
            raise InvalidInputError(f"{folder} holds no {'/'.join(FRAME_SUFFIXES)} frames")
        numbered = sorted(files, key=lambda p: (_frame_number(p), p.name))
        numbers = [_frame_number(p) for p in numbered]
        if len(set(numbers)) != len(numbers):
            raise InvalidInputError(f"{folder} has two frames with the same number")
        self._files = numbered
        first = self._read(0)
        self.num_frames, (self.height, self.width) = len(numbered), first.shape[:2]

    def close(self) -> None:
        self._files = []

    def _read(self, index: int) -> np.ndarray:
        path = self._files[index]
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise InvalidInputError(f"cannot decode frame {path.name}: {exc}") from None


class _VideoFileFrames(FrameSource):
    """A video file through PyAV: packet timestamps are indexed at open (no decoding), frames decoded on demand."""

    def __init__(self, path: Path) -> None:
        import av

        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as exc:
            raise InvalidInputError(f"cannot open {path.name} as a video: {exc}") from None
        self._stream = stream
        try:
            pts = sorted(p.pts for p in self._container.demux(stream) if p.pts is not None and p.size > 0)
        except av.error.FFmpegError as exc:
            raise InvalidInputError(f"cannot read {path.name}: {exc}") from None
        if not pts:
            raise InvalidInputError(f"{path.name} has no video frames")
        self._pts = pts
        self._index = {value: i for i, value in enumerate(pts)}
        self._decoder: Any = None
        self._next = -1  # index of the frame the open decoder yields next (-1: none open)
        self.num_frames = len(pts)
        self.fps = float(stream.average_rate) if stream.average_rate else None
        first = self._read(0)
        self.height, self.width = first.shape[:2]

    def _read(self, index: int) -> np.ndarray:
        import av

        if self._decoder is None or index < self._next or index > self._next + 16:
            self._container.seek(self._pts[index], stream=self._stream, backward=True, any_frame=False)
            self._decoder = self._container.decode(self._stream)
        try:
            for frame in self._decoder:
                position = self._index.get(frame.pts, -1) if frame.pts is not None else -1
                self._next = position + 1
                if position == index:
                    return np.asarray(frame.to_ndarray(format="rgb24"))
                if position > index:
                    break
        except av.error.FFmpegError as exc:
            raise InvalidInputError(f"cannot decode frame {index}: {exc}") from None
        self._decoder = None
        raise InvalidInputError(f"cannot decode frame {index} of the video")

    def close(self) -> None:
        self._decoder = None
        self._container.close()


def open_frames(video: Any) -> FrameSource:
    """Open ``video`` for lazy, random-access decoding.

    Args:
        video: a path to a video file (anything FFmpeg reads through PyAV: mp4, webm, mov, mkv, avi…), a path to a
            folder of JPEG/PNG frames (ordered by the last number in each file name), a :class:`FrameSource`
            (returned as is), or a sequence of RGB ``uint8`` ``[H, W, 3]`` arrays of one size (anything with
            ``len()`` and indexing, so frames may be produced on demand).

    Raises:
        InvalidInputError: the path does not exist, the folder holds no frames, the file is not a video, or the
            arrays are not RGB ``uint8``.
    """
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, Path)):
        path = Path(video).expanduser()
        if path.is_dir():
            return _FolderFrames(path)
        if path.is_file():
            return _VideoFileFrames(path)
        raise InvalidInputError(f"video not found: {video}")
    if isinstance(video, np.ndarray) and video.ndim == 4:
        return _ArrayFrames(list(video))
    if hasattr(video, "__len__") and hasattr(video, "__getitem__") and not isinstance(video, (bytes, bytearray, dict)):
        return _ArrayFrames(video)  # a list, tuple, or any lazy sequence of frames
    raise InvalidInputError(
        f"cannot read a video from {type(video).__name__}: give a video file, a folder of frames or a list of arrays"
    )
