"""Frame sources: video files through PyAV, frame folders ordered by number, arrays; all lazy and random-access."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from perceptra_seg import InvalidInputError
from perceptra_seg.video import FrameSource, open_frames


def _frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[:, :, 0] = index * 10  # the frame index, readable back from the red channel
    frame[8:24, 4 * index : 4 * index + 16] = (0, 255, 0)
    return frame


def _write_video(path: Path, count: int, *, gop: int = 4) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "0", "bf": "0"}
        for i in range(count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_file_random_access(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_video(path, 20)
    with open_frames(path) as frames:
        assert (frames.num_frames, frames.height, frames.width, len(frames)) == (20, 48, 64, 20)
        assert frames.fps == pytest.approx(12.0)
        # forward, backwards (seek to an earlier keyframe), a jump ahead: each frame is the one asked for
        for index in [0, 1, 2, 15, 3, 19, 7, 8, 0]:
            red = frames.frame(index)[30:40, 30:40, 0].astype(int)
            assert abs(int(np.median(red)) - index * 10) <= 3, index
        with pytest.raises(InvalidInputError, match="out of range"):
            frames.frame(20)


def test_folder_is_ordered_by_the_number_in_each_name(tmp_path: Path) -> None:
    for index, name in [(2, "frame_2.png"), (10, "frame_10.png"), (1, "frame_1.png")]:
        Image.fromarray(_frame(index)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = open_frames(tmp_path)
    assert frames.num_frames == 3
    assert [int(frames.frame(i)[0, 0, 0]) for i in range(3)] == [10, 20, 100]


def test_arrays_and_errors(tmp_path: Path) -> None:
    frames = open_frames([_frame(0), _frame(1)])
    assert isinstance(frames, FrameSource) and frames.fps is None
    assert np.array_equal(frames.frame(1), _frame(1))
    assert open_frames(frames) is frames
    with pytest.raises(InvalidInputError, match="uint8"):
        open_frames([np.zeros((4, 4), dtype=np.uint8)])
    with pytest.raises(InvalidInputError, match="no frames"):
        open_frames([])
    with pytest.raises(InvalidInputError, match="not found"):
        open_frames(tmp_path / "missing.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InvalidInputError, match="cannot"):
        open_frames(tmp_path / "broken.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="holds no"):
        open_frames(empty)
    mixed = open_frames([_frame(0), _frame(0, height=40)])
    with pytest.raises(InvalidInputError, match="frames are 64x48"):
        mixed.frame(1)
