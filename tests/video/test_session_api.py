"""The SDK surface: Segmentor.track / open_video end to end, streaming order, session lifecycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from perceptra_seg import InvalidInputError
from perceptra_seg.cancel import CancelToken, OperationCancelledError

BOX = (30, 40, 110, 100)
CLICK = (170, 130, 1)


def test_track_streams_every_frame_in_order(tiny_segmentor: Any, clip: tuple[Path, list[np.ndarray]]) -> None:
    folder, frames = clip
    prompts = [{"frame": 0, "obj_id": 1, "box": BOX}, {"frame": 2, "obj_id": 9, "points": [CLICK]}]
    seen = []
    for index, results in tiny_segmentor.track(folder, prompts, output_formats=["rle", "numpy"]):
        seen.append(index)
        assert set(results) == {1, 9}
        for result in results.values():
            decoded = mask_utils.decode(result.rle).astype(bool)
            assert decoded.shape == frames[0].shape[:2]
            assert np.array_equal(decoded, result.mask)
            assert result.area == int(result.mask.sum())
            assert 0.0 <= result.score <= 1.0
    assert seen == list(range(len(frames)))


def test_session_add_prompt_then_propagate(tiny_segmentor: Any, clip: tuple[Path, list[np.ndarray]]) -> None:
    _, frames = clip
    with tiny_segmentor.open_video(frames) as session:
        assert session.num_frames == 8 and session.frame_size == (180, 240)
        first = session.add_prompt({"frame": 0, "obj_id": 4, "box": BOX}, output_formats=["numpy"])
        assert list(first) == [4] and first[4].area > 0
        assert session.object_ids == [4]
        streamed = list(session.propagate(max_frames=3, output_formats=["numpy"]))
        assert [index for index, _ in streamed] == [0, 1, 2]
        # frame 0 is the prompted frame: propagation returns its prompted mask unchanged
        assert np.array_equal(streamed[0][1][4].mask, first[4].mask)
    assert session.closed
    with pytest.raises(InvalidInputError, match="closed"):
        session.add_prompt({"frame": 0, "obj_id": 4, "box": BOX})


def test_reverse_yields_descending_frames(tiny_segmentor: Any, clip: tuple[Path, list[np.ndarray]]) -> None:
    _, frames = clip
    prompts = [{"frame": 5, "obj_id": 1, "box": BOX}]
    order = [index for index, _ in tiny_segmentor.track(frames, prompts, reverse=True, max_frames=4)]
    assert order == [5, 4, 3, 2]


def test_cancel_stops_between_frames(tiny_segmentor: Any, clip: tuple[Path, list[np.ndarray]]) -> None:
    _, frames = clip
    token = CancelToken()
    done = []
    with pytest.raises(OperationCancelledError):
        for index, _ in tiny_segmentor.track(frames, [{"frame": 0, "obj_id": 1, "box": BOX}], cancel=token):
            done.append(index)
            if index == 1:
                token.cancel("enough")
    assert done == [0, 1]


def test_remove_object_and_reset(tiny_segmentor: Any, clip: tuple[Path, list[np.ndarray]]) -> None:
    _, frames = clip
    with tiny_segmentor.open_video(frames) as session:
        session.add_prompt({"frame": 0, "obj_id": 5, "box": BOX})
        session.add_prompt({"frame": 0, "obj_id": 6, "points": [CLICK]})
        before = dict(session.propagate(max_frames=2, output_formats=["numpy"]))
        session.remove_object(5)
        assert session.object_ids == [6]
        after = dict(session.propagate(max_frames=2, output_formats=["numpy"]))
        assert set(after[1]) == {6}
        # object 6 keeps its own memory: its masks do not change when object 5 goes
        assert np.array_equal(after[1][6].mask, before[1][6].mask)
        session.reset()
        assert session.object_ids == []
        assert session.state.retained_frames() == 0
