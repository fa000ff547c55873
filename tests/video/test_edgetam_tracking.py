"""EdgeTAM tracking: our ``open_video`` / ``track`` (perceptra_seg.video, EdgeTAM switch) against transformers'
``EdgeTamVideoModel`` driven through its own session API, on the same converted weights and the same clip.

The reference holds transformers' conversion (``tests/parity/hf_edgetam``) of the random-weight authors' file
(``small_edgetam``: reduced RepViT trunk, full-size memory, perceiver and heads); its frames are our
``frame_pixel_values`` (the SAM 2 video preprocessing, proven against Meta's predictor in ``test_parity.py``), its
prompt is what transformers' processor makes of a box (corners labelled 2 and 3, scaled to 1024), and its masks are
the low-resolution logits resized bilinearly to the frame, ``> 0``. Three frames, one box on frame 0, forward.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perceptra_seg import Segmentor
from perceptra_seg.backends.edgetam import build_edgetam
from perceptra_seg.config import SegmentorConfig
from perceptra_seg.exceptions import ModelLoadError
from perceptra_seg.video.model import load_video_model
from perceptra_seg.video.session import frame_pixel_values

from ..edgetam_support import VIDEO_FLAGS
from ..parity.hf_edgetam import convert_edgetam_video_to_hf as hf_video

BOX = (30.0, 25.0, 120.0, 95.0)
Prepared = tuple[Path, dict[str, torch.Tensor], dict[str, Any]]


@pytest.fixture(scope="module")
def clip(photos: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Three 160×120 crops of a photo, each shifted 6 pixels right of the one before (a slow pan)."""
    photo = photos["chelsea"]
    return [np.ascontiguousarray(photo[100:220, 150 + 6 * i : 310 + 6 * i]) for i in range(3)]


def _reference(path: Path, architecture: dict[str, Any], frames: list[np.ndarray]) -> dict[int, tuple[Any, float]]:
    from transformers.models.edgetam_video.modeling_edgetam_video import EdgeTamVideoInferenceSession

    model: Any = build_edgetam({**VIDEO_FLAGS, **architecture}, video=True)
    authors = torch.load(path, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(hf_video.replace_keys(authors), strict=True)
    model.eval()
    height, width = frames[0].shape[:2]
    video = torch.cat([frame_pixel_values(frame, 1024) for frame in frames])
    session = EdgeTamVideoInferenceSession(video=video, video_height=height, video_width=width, dtype=torch.float32)
    x1, y1, x2, y2 = BOX
    corners = torch.tensor([[x1, y1], [x2, y2]]) / torch.tensor([width, height]) * 1024
    obj_idx = session.obj_id_to_idx(1)
    session.add_point_inputs(
        obj_idx, 0, {"point_coords": corners[None, None], "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)}
    )
    session.obj_with_new_inputs = [1]
    found: dict[int, tuple[Any, float]] = {}
    with torch.inference_mode():
        model(inference_session=session, frame_idx=0)
        for out in model.propagate_in_video_iterator(session, start_frame_idx=0):
            logits = F.interpolate(out.pred_masks.float(), size=(height, width), mode="bilinear", align_corners=False)
            score = 1.0 / (1.0 + math.exp(-float(out.object_score_logits.flatten()[0])))
            found[out.frame_idx] = ((logits[0, 0] > 0).numpy(), score)
    return found


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_edgetam_tracking_matches_transformers_video_model(small_edgetam: Prepared, clip: list[np.ndarray]) -> None:
    path, _, config = small_edgetam
    expected = _reference(path, config["model"]["architecture"], clip)
    with Segmentor(config) as seg:
        actual = {
            frame: results[1]
            for frame, results in seg.track(clip, [{"frame": 0, "obj_id": 1, "box": BOX}], output_formats=["numpy"])
        }
    assert sorted(actual) == sorted(expected) == [0, 1, 2]
    for frame, (mask, score) in expected.items():
        assert 0.02 < mask.mean() < 0.98, frame  # partial masks, so the comparison means something
        assert _iou(actual[frame].mask, mask) >= 0.99, frame
        assert abs(actual[frame].score - score) <= 1e-3, frame


def test_edgetam_file_under_sam_v2_is_refused_for_video(small_edgetam: Prepared) -> None:
    """The tracking loader checks the file's network itself (the image backend, built first, does too)."""
    path, _, config = small_edgetam
    settings = SegmentorConfig.load(
        None,
        model={"name": "sam_v2", "variant": "hiera_tiny", "checkpoint_path": str(path)},
        runtime=config["runtime"],
    )
    with pytest.raises(ModelLoadError, match="holds a 'edgetam' network but model 'sam_v2'"):
        load_video_model(settings)
