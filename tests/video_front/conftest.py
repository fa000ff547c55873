"""Fixtures of the video front-end tests: a short synthetic clip (mp4) and the tiny SAM 2 model's config."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CLIP_FRAMES, CLIP_HEIGHT, CLIP_WIDTH, CLIP_FPS = 8, 64, 96, 10


def synthetic_frames(count: int = CLIP_FRAMES, height: int = CLIP_HEIGHT, width: int = CLIP_WIDTH) -> list[np.ndarray]:
    """Non-square RGB frames: a textured background, a red square moving right and a blue disc moving left."""
    rng = np.random.default_rng(3)
    background = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for t in range(count):
        frame = background.copy()
        frame[12:36, 14 + 2 * t : 40 + 2 * t] = (220, 40, 40)
        frame[(xx - (72 - 2 * t)) ** 2 + (yy - 32) ** 2 <= 11**2] = (40, 60, 230)
        frames.append(frame)
    return frames


@pytest.fixture(scope="session")
def clip_frames() -> list[np.ndarray]:
    return synthetic_frames()


def write_video(
    frames: list[np.ndarray], path: Path, *, codec: str = "libx264", pix_fmt: str = "yuv420p", fps: int = CLIP_FPS
) -> Path:
    """``frames`` (RGB uint8 ``[H, W, 3]``) encoded into ``path`` (H.264 by default; ``codec="ffv1"``,
    ``pix_fmt="bgr0"`` in a ``.mkv`` decodes back to exactly the same pixels)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory: pytest.TempPathFactory, clip_frames: list[np.ndarray]) -> Path:
    """The clip as an H.264 mp4 at 10 frames/s (both the SDK and the front ends read this file)."""
    return write_video(clip_frames, tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="session")
def video_sections(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Config sections of the tiny SAM 2.1 tracker (hiera_tiny at a 256 input, random weights, Meta's file format;
    built as in tests/video/conftest.py)."""
    import torch

    from ..video.conftest import build_reference_video_predictor, small_architecture

    predictor = build_reference_video_predictor("sam_v2")
    path = tmp_path_factory.mktemp("video_front_ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": predictor.state_dict()}, path)
    return {
        "model": {
            "name": "sam_v2",
            "variant": "hiera_tiny",
            "checkpoint_path": str(path),
            "architecture": small_architecture(),
        },
        "runtime": {"device": "cpu", "precision": "fp32"},
    }


#: The prompts every end-to-end test tracks (SDK form): a box on frame 0 (object 1), a click on frame 2 (object 3).
SDK_PROMPTS = [
    {"frame": 0, "obj_id": 1, "box": (10.0, 8.0, 50.0, 40.0)},
    {"frame": 2, "obj_id": 3, "points": [(70.0, 30.0, 1)]},
]


@pytest.fixture(scope="session")
def sdk(video_sections: dict[str, Any]) -> Iterator[Any]:
    """One SDK ``Segmentor`` on the tiny tracker, the reference of the front ends."""
    from perceptra_seg import Segmentor

    with Segmentor(video_sections) as seg:
        yield seg


@pytest.fixture(scope="session")
def forward_masks(sdk: Any, clip_path: Path) -> dict[int, dict[int, np.ndarray]]:
    """``Segmentor.track`` of :data:`SDK_PROMPTS` over the whole clip: ``{frame: {obj_id: bool mask}}``."""
    stream = sdk.track(str(clip_path), SDK_PROMPTS, output_formats=("numpy",))
    return {frame: {obj: r.mask for obj, r in results.items()} for frame, results in stream}
