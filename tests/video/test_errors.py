"""Bad input to video tracking: clear InvalidInputError / ModelLoadError, never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from perceptra_seg import InvalidInputError, ModelLoadError
from perceptra_seg.video import VideoPrompt
from perceptra_seg.video.conversion import convert_video_state_dict

FRAMES = [np.zeros((72, 96, 3), dtype=np.uint8)] * 6


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"frame": 0}, "needs 'obj_id'"),
        ({"frame": 0, "obj_id": 1}, "no box, points or mask"),
        ({"frame": 0, "obj_id": 1, "box": (5, 5, 1, 1)}, "x1 < x2"),
        ({"frame": 0, "obj_id": 1, "box": (0, 0, 1)}, "4 finite numbers"),
        ({"frame": 0, "obj_id": 1, "points": [(1, 2)]}, r"\(x, y, label\)"),
        ({"frame": 0, "obj_id": 1, "points": [(1, 2, 5)]}, "label must be 1"),
        ({"frame": -1, "obj_id": 1, "box": (0, 0, 5, 5)}, ">= 0"),
        ({"frame": 0, "obj_id": "a", "box": (0, 0, 5, 5)}, "integer"),
        ({"frame": 0, "obj_id": 1, "box": (0, 0, 5, 5), "colour": 1}, "unknown video prompt keys"),
        ({"frame": 0, "obj_id": 1, "box": (0, 0, 5, 5), "mask": np.ones((4, 4))}, "cannot be combined"),
    ],
)
def test_malformed_prompts(prompt: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        VideoPrompt.from_dict(prompt)


def test_prompts_outside_the_video(tiny_segmentor: Any) -> None:
    with tiny_segmentor.open_video(FRAMES) as session:
        cases = [
            ({"frame": 6, "obj_id": 1, "box": (0, 0, 5, 5)}, "out of range"),
            ({"frame": 0, "obj_id": 1, "box": (0, 0, 97, 5)}, "outside the 96x72 frame"),
            ({"frame": 0, "obj_id": 1, "points": [(10, 80, 1)]}, "outside"),
            ({"frame": 0, "obj_id": 1, "mask": np.ones((10, 10), bool)}, r"\[72, 96\]"),
        ]
        for prompt, message in cases:
            with pytest.raises(InvalidInputError, match=message):
                session.add_prompt(prompt)
        with pytest.raises(InvalidInputError, match="add a prompt first"):
            session.propagate()
        session.add_prompt({"frame": 1, "obj_id": 3, "mask": np.pad(np.ones((20, 20), bool), ((10, 42), (10, 66)))})
        with pytest.raises(InvalidInputError, match="unknown object id 4"):
            session.remove_object(4)
        with pytest.raises(InvalidInputError, match="start_frame"):
            session.propagate(start_frame=6)
        with pytest.raises(InvalidInputError, match="max_frames"):
            session.propagate(max_frames=0)
        with pytest.raises(InvalidInputError, match="output format"):
            session.propagate(output_formats=["jpeg"])
        session.remove_object(3)
        assert session.object_ids == []
    with pytest.raises(InvalidInputError, match="at least one prompt"):
        tiny_segmentor.track(FRAMES, [])
    with pytest.raises(InvalidInputError, match="out of range"):
        tiny_segmentor.track(FRAMES, [{"frame": 9, "obj_id": 1, "box": (0, 0, 5, 5)}])


def test_image_only_model_is_refused(small_segmentor: Any) -> None:
    with pytest.raises(InvalidInputError, match="segments images only"):
        small_segmentor.open_video(FRAMES)


def test_image_only_sam2_export_is_refused(tmp_path: Path) -> None:
    state = {"sam_mask_decoder.x": torch.zeros(1), "image_encoder.trunk.y": torch.zeros(1)}
    with pytest.raises(ValueError, match="no memory_attention"):
        convert_video_state_dict(state)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    from perceptra_seg.config import SegmentorConfig
    from perceptra_seg.video.model import load_video_model

    config = SegmentorConfig.resolve(None, model="sam_v2", variant="hiera_tiny", device="cpu", checkpoint_path=path)
    with pytest.raises(ModelLoadError, match="cannot track video"):
        load_video_model(config)
