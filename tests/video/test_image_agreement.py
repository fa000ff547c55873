"""The image path and the video path agree on frame 0 of a box prompt (released hiera_tiny geometry, SAM 2.1).

The two paths share the model but not the resize: ``segment_from_box`` resizes like Meta's image predictor
(antialiased bilinear on floats), the video path like Meta's video loader (Pillow's bicubic on the uint8 frame), so
the masks are compared by IoU, not bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from perceptra_seg import Segmentor

from .conftest import build_reference_video_predictor, write_clip

BOX = (30.0, 40.0, 110.0, 100.0)


def test_frame0_box_matches_segment_from_box(tmp_path: Path) -> None:
    frames = write_clip(tmp_path / "clip", frames=2)
    predictor = build_reference_video_predictor("sam_v2", size=1024)
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": predictor.state_dict()}, checkpoint)
    del predictor
    with Segmentor(
        model="sam_v2", variant="hiera_tiny", device="cpu", precision="fp32", checkpoint_path=checkpoint
    ) as seg:
        image = seg.segment_from_box(frames[0], BOX, output_formats=["numpy"])
        with seg.open_video(frames) as session:
            video = session.add_prompt({"frame": 0, "obj_id": 1, "box": BOX}, output_formats=["numpy"])[1]
    assert image.mask is not None and video.mask is not None
    assert 0.02 < image.mask.mean() < 0.9
    union = np.logical_or(image.mask, video.mask).sum()
    assert np.logical_and(image.mask, video.mask).sum() / union >= 0.99
