"""DAVIS-style palette PNGs: one indexed image per tracked frame, pixel value = object id.

Layout of the folder :class:`PaletteMaskWriter` fills (what the DAVIS / YouTube-VOS evaluation scripts and Meta's
``vos_inference.py`` read):

* one file per tracked frame, named by its frame index in the video with five digits: ``00000.png``,
  ``00001.png``, … (frames that were not tracked get no file);
* 8-bit PNG, mode ``"P"`` (indexed), the frame's width and height;
* pixel value = the id of the object covering it, 0 = background; load with ``numpy.array(PIL.Image.open(p))``
  to get the ids directly (the palette only colours the picture);
* the palette is the PASCAL VOC / DAVIS colour map (:func:`davis_palette`): 0 black, 1 ``(128, 0, 0)``,
  2 ``(0, 128, 0)``, 3 ``(128, 128, 0)``, …;
* object ids must lie in ``1..255`` (one byte); another id is refused with
  :class:`~perceptra_seg.exceptions.InvalidInputError` before anything is written for that frame;
* where masks overlap, the pixel takes the **smallest** object id (as Meta's ``vos_inference.py`` does): each
  pixel holds one id.

Each file is written atomically (a temporary name, then a rename), so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.utils.atomic import write_bytes_atomic
from perceptra_seg.utils.masks import rle_to_mask

from .outputs import FrameResults

__all__ = [
    "MAX_OBJECT_ID",
    "PaletteMaskWriter",
    "check_object_ids",
    "davis_palette",
    "frame_label_map",
    "palette_file_name",
]

#: The largest object id a palette PNG can hold.
MAX_OBJECT_ID = 255


def davis_palette() -> list[int]:
    """The 256-entry colour map as a flat ``[r0, g0, b0, r1, ...]`` list (768 ints), as ``Image.putpalette`` takes.

    Entry ``i`` spreads the bits of ``i`` over the three channels, most significant first: bit 0 of each 3-bit
    group goes to red, bit 1 to green, bit 2 to blue, the first group landing on the channel's bit 7.
    """
    flat: list[int] = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        flat.extend((red, green, blue))
    return flat


def palette_file_name(frame_index: int) -> str:
    """``00042.png`` for frame 42."""
    return f"{frame_index:05d}.png"


def check_object_ids(ids: Iterable[int]) -> None:
    """Refuse object ids a palette PNG cannot hold (outside ``1..255``).

    Raises:
        InvalidInputError: naming the first offending id.
    """
    for obj_id in sorted(int(i) for i in ids):
        if not 1 <= obj_id <= MAX_OBJECT_ID:
            raise InvalidInputError(
                f"object id {obj_id} cannot be stored in a palette PNG (ids must lie in 1..{MAX_OBJECT_ID})"
            )


def frame_label_map(results: FrameResults, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[H, W]`` label map of one frame: object id per pixel, 0 = background, the smallest id on overlaps.

    Args:
        results: ``{obj_id: SegmentationResult}``, each with ``mask`` or ``rle``.
        size: ``(H, W)`` of the frame.

    Raises:
        InvalidInputError: an id outside ``1..255``, a mask of another size, a result with neither mask nor rle.
    """
    check_object_ids(results.keys())
    labels = np.zeros(size, dtype=np.uint8)
    for obj_id in sorted(results, reverse=True):  # the smallest id is drawn last and wins
        result = results[obj_id]
        if result.mask is not None:
            mask = np.asarray(result.mask, dtype=bool)
        elif result.rle is not None:
            mask = rle_to_mask(result.rle)
        else:
            raise InvalidInputError(f"object {obj_id} has neither a 'numpy' nor an 'rle' output")
        if mask.shape != size:
            raise InvalidInputError(f"mask of object {obj_id} has shape {list(mask.shape)}; expected {list(size)}")
        labels[mask] = obj_id
    return labels


class PaletteMaskWriter:
    """Write one palette PNG per tracked frame into ``folder`` (layout in the module docstring).

    Args:
        folder: created (with missing parents) when absent.
        size: ``(H, W)`` of the video's frames.
    """

    def __init__(self, folder: str | os.PathLike[str], *, size: tuple[int, int]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.written = 0
        self._palette = davis_palette()

    def add(self, frame_index: int, results: FrameResults) -> Path:
        """Write frame ``frame_index``'s label map; returns the file's path."""
        labels = frame_label_map(results, self.size)
        height, width = self.size
        picture = Image.frombytes("P", (width, height), labels.tobytes())
        picture.putpalette(self._palette)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        path = self.folder / palette_file_name(frame_index)
        write_bytes_atomic(path, buffer.getvalue())
        self.written += 1
        return path
