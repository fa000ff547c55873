"""The tracking model's speed-ups (``perceptra_seg.video.speedups``) leave every result bit-identical.

One tiny hiera_tiny-shaped model (``conftest.tiny_architecture``, 64-pixel input) is loaded twice from the same
transformers directory: once through ``load_video_model`` (speed-ups installed) and once plainly. Both track the
same frames with the same prompt; every low-resolution logit, object score and stored memory must be equal.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perceptra_seg.config import SegmentorConfig
from perceptra_seg.video import tracker
from perceptra_seg.video.model import VideoModel, load_video_model
from perceptra_seg.video.prompts import VideoPrompt
from perceptra_seg.video.session import frame_pixel_values
from perceptra_seg.video.speedups import install_speedups

FRAMES = 4
SIZE = (48, 64)  # (H, W) of the frames


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    frames = []
    for t in range(FRAMES):
        frame = rng.integers(20, 60, (*SIZE, 3), dtype=np.uint8)
        frame[12:32, 8 + 4 * t : 28 + 4 * t] = (210, 70, 60)
        frames.append(frame)
    return frames


def _track(video_model: VideoModel, frames: list[np.ndarray]) -> list[Any]:
    """Logits and scores on every frame, then every stored memory tensor, in a fixed order."""
    state = tracker.new_state(video_model, len(frames))
    found: list[Any] = []

    def encode(index: int) -> None:
        with torch.inference_mode():
            pixels = frame_pixel_values(frames[index], video_model.image_size)
            tracker.ensure_features(video_model, state, index, pixels)

    encode(0)
    prompt = VideoPrompt.from_dict({"frame": 0, "obj_id": 1, "box": (8.0, 12.0, 28.0, 32.0)})
    outputs = tracker.add_prompt(video_model, state, prompt, SIZE)
    found += [(outputs[1].logits, outputs[1].object_score_logit)]
    for index in range(1, len(frames)):
        encode(index)
        outputs = tracker.propagate_frame(video_model, state, index, reverse=False)
        found += [(outputs[1].logits, outputs[1].object_score_logit)]
    for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
        for frame, out in sorted(state.output_dict_per_obj[0][kind].items()):
            found += [(kind, frame, out["maskmem_features"], out["maskmem_pos_enc"], out["object_pointer"])]
    return found


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)):
        return (
            isinstance(b, (tuple, list)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return bool(a == b)


def test_speedups_change_no_tracking_result(tiny_video_dir: Path) -> None:
    from transformers import Sam2VideoModel

    config = SegmentorConfig.resolve(
        None, model="sam_v2", variant="hiera_tiny", device="cpu", checkpoint_path=tiny_video_dir
    )
    fast = load_video_model(config)
    plain = dataclasses.replace(fast, model=Sam2VideoModel.from_pretrained(tiny_video_dir).eval())
    # installed by the loader: neck and memory-encoder position tables, rotary tables, 5 Hiera blocks
    assert install_speedups(fast.model) == 0
    assert all(getattr(b.attn, "_perceptra_speedup", False) for b in fast.model.vision_encoder.backbone.blocks)
    assert not any(getattr(m, "_perceptra_speedup", False) for m in plain.model.modules())
    frames = _frames()
    expected = _track(plain, frames)
    for _ in range(2):  # the second pass reads the cached tables
        actual = _track(fast, frames)
        assert len(actual) == len(expected)
        for ours, theirs in zip(actual, expected, strict=True):
            assert _equal(ours, theirs)
    assert float(np.mean([float(x[0].gt(0).float().mean()) for x in expected[:FRAMES]])) > 0.0


def test_install_counts_each_module_once(tiny_video_dir: Path) -> None:
    from transformers import Sam2VideoModel

    model = Sam2VideoModel.from_pretrained(tiny_video_dir).eval()
    blocks = len(model.vision_encoder.backbone.blocks)
    assert (
        install_speedups(model) == blocks + 4 + 8
    )  # + trunk and neck tables, memory-encoder table, rotary tables, 4 layers × 2 RoPE attentions
    assert install_speedups(model) == 0
    table = model.vision_encoder.neck.position_encoding
    first = table(torch.Size([1, 256, 4, 4]), "cpu", torch.float32)
    assert table(torch.Size([1, 256, 4, 4]), "cpu", torch.float32) is first
    other = table(torch.Size([1, 256, 8, 8]), "cpu", torch.float32)
    assert other.shape == (1, 256, 8, 8)
    assert table(torch.Size([1, 256, 4, 4]), "cpu", torch.float32) is first
    trunk = model.vision_encoder.backbone
    with torch.inference_mode():
        grid = trunk._get_pos_embed((16, 16))
        assert trunk._get_pos_embed((16, 16)) is grid
    assert trunk._get_pos_embed((16, 16)) is not grid  # with gradients on, transformers' method runs every time
    assert torch.equal(trunk._get_pos_embed((16, 16)), grid)
