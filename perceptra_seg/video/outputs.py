"""Tracking results as JSON: one document per frame, and the YouTube-VIS results file.

Both consume the stream :meth:`Segmentor.track <perceptra_seg.Segmentor.track>` and
:meth:`VideoSession.propagate <perceptra_seg.video.session.VideoSession.propagate>` yield:
``(frame_index, {obj_id: SegmentationResult})`` pairs, in the order the frames were tracked (ascending, or
descending with ``reverse=True``).

Per-frame document (:func:`frame_document`; the REST service's NDJSON lines and prompt answers)::

    {"frame": 3, "objects": [{"obj_id": 1, "score": 0.93, "area": 1520, "bbox": [x1, y1, x2, y2],
                               "rle": {"size": [H, W], "counts": "..."}}, ...]}

``objects`` is sorted by ``obj_id``; ``bbox`` is XYXY in pixels with ``x2``/``y2`` exclusive; the encodings are the
ones the results carry (``rle``, ``png_base64``, ``polygons``; see :func:`perceptra_seg.results.mask_document`).

YouTube-VIS results file (:class:`YouTubeVisWriter`): the layout the YouTube-VIS / OVIS evaluation servers and
``pycocotools``-style ``YTVOS`` loaders read, a JSON list with one entry per tracked object::

    [{"video_id": 1, "category_id": 1, "obj_id": 2, "score": 0.87,
      "segmentations": [null, {"size": [H, W], "counts": "..."}, ...]}, ...]

* ``segmentations`` has exactly ``num_frames`` entries, index = frame index of the video. An entry is the
  object's COCO RLE on that frame (``counts`` a compressed string, as ``pycocotools.mask.encode`` gives it, decoded
  by ``pycocotools.mask.decode``), or ``null`` where the object's mask is empty or the frame was not tracked
  (before ``start_frame``, after ``max_frames``, or on the other side of the prompt with ``reverse``).
* ``score`` is the mean of the object's per-frame scores over the frames where its mask is not empty (0.0 when
  it is empty everywhere). The per-frame score is the SDK's ``SegmentationResult.score``.
* ``obj_id`` is the id the object was prompted with (an extra key; evaluation code ignores it).
* Entries are sorted by ``obj_id``.

The writer streams: RLEs go to a spool file beside the output as they arrive and only their offsets stay in memory;
the final file is assembled from the spool when :meth:`YouTubeVisWriter.close` is called and renamed into place
atomically (never a half-written file).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.models import SegmentationResult
from perceptra_seg.results import mask_document
from perceptra_seg.utils.atomic import atomic_write

__all__ = ["FrameResults", "YouTubeVisWriter", "frame_document"]

#: One tracked frame's masks: ``{obj_id: SegmentationResult}``.
FrameResults = Mapping[int, SegmentationResult]


def frame_document(frame_index: int, results: FrameResults) -> dict[str, Any]:
    """``{"frame", "objects": [{"obj_id", "score", "area", "bbox", <encodings>}, ...]}`` of one tracked frame
    (objects sorted by id; ``prompt_index`` of the image documents is left out: objects are named by id)."""
    objects = []
    for obj_id in sorted(results):
        document = mask_document(results[obj_id])
        document.pop("prompt_index", None)
        objects.append({"obj_id": int(obj_id), **document})
    return {"frame": int(frame_index), "objects": objects}


class YouTubeVisWriter:
    """Stream tracked frames into a YouTube-VIS results file (layout in the module docstring).

    Args:
        path: the ``.json`` file to write (its folder must exist).
        num_frames: frames of the whole video (length of every ``segmentations`` list).
        video_id: the ``video_id`` of every entry (the id of the video in the dataset's annotation file).
        category_id: the ``category_id`` of every entry (tracking is class-agnostic).

    Use as a context manager, or call :meth:`close`; :meth:`add` each frame's results as they arrive. Every result
    must carry ``rle`` (the SDK's default output format).

    Raises:
        InvalidInputError: ``num_frames`` < 1; later, a frame index outside the video, a frame added twice or a
            result without ``rle``.
        OSError: the folder does not exist or is not writable.
    """

    def __init__(self, path: str | os.PathLike[str], *, num_frames: int, video_id: int = 1, category_id: int = 1):
        if num_frames < 1:
            raise InvalidInputError(f"num_frames must be at least 1, got {num_frames}")
        self.path = Path(path)
        self.num_frames = num_frames
        self.video_id = video_id
        self.category_id = category_id
        # obj_id -> frame -> (offset, length) of its RLE in the spool; obj_id -> [score sum, frames present]
        self._index: dict[int, dict[int, tuple[int, int]]] = {}
        self._scores: dict[int, list[float]] = {}
        self._frames_seen: set[int] = set()
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".spool", dir=self.path.parent)
        self._spool_path = Path(name)
        self._spool = os.fdopen(fd, "w+b")
        self._closed = False

    def __enter__(self) -> YouTubeVisWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()

    @property
    def frames_written(self) -> int:
        """Frames added so far."""
        return len(self._frames_seen)

    def add(self, frame_index: int, results: FrameResults) -> None:
        """Record one tracked frame (every object's RLE; empty masks become ``null``)."""
        if not 0 <= frame_index < self.num_frames:
            raise InvalidInputError(f"frame {frame_index} is outside the video's {self.num_frames} frames")
        if frame_index in self._frames_seen:
            raise InvalidInputError(f"frame {frame_index} was added twice")
        self._frames_seen.add(frame_index)
        for obj_id, result in results.items():
            frames = self._index.setdefault(int(obj_id), {})
            totals = self._scores.setdefault(int(obj_id), [0.0, 0.0])
            if result.rle is None:
                raise InvalidInputError(f"object {obj_id} on frame {frame_index} has no 'rle' output")
            if result.area == 0:
                continue
            data = json.dumps(result.rle, separators=(",", ":")).encode("ascii")
            offset = self._spool.seek(0, os.SEEK_END)
            self._spool.write(data)
            frames[frame_index] = (offset, len(data))
            totals[0] += float(result.score)
            totals[1] += 1.0

    def close(self) -> None:
        """Assemble the results file from the spool (atomic rename) and remove the spool."""
        if self._closed:
            return
        try:
            self._spool.flush()
            with atomic_write(self.path) as out:
                out.write(b"[")
                for position, obj_id in enumerate(sorted(self._index)):
                    total, present = self._scores[obj_id]
                    head = {
                        "video_id": self.video_id,
                        "category_id": self.category_id,
                        "obj_id": obj_id,
                        "score": total / present if present else 0.0,
                    }
                    out.write(b",\n" if position else b"\n")
                    out.write(json.dumps(head)[:-1].encode("ascii") + b', "segmentations": [')
                    self._write_segmentations(out, self._index[obj_id])
                    out.write(b"]}")
                out.write(b"\n]\n")
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the spool without writing the results file (after a failure)."""
        self._closed = True
        self._spool.close()
        self._spool_path.unlink(missing_ok=True)

    def _write_segmentations(self, out: Any, frames: dict[int, tuple[int, int]]) -> None:
        for frame in range(self.num_frames):
            if frame:
                out.write(b", ")
            where = frames.get(frame)
            if where is None:
                out.write(b"null")
                continue
            self._spool.seek(where[0])
            out.write(self._spool.read(where[1]))
