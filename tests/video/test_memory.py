"""Bounded memory: frames decoded lazily, the tracking state pruned to what the model reads, freed on close."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FRAMES = 400


class _SyntheticVideo:
    """Frames made on demand (nothing is held): a bright square drifting over a dark background."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.made = 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        self.made += 1
        frame = np.full((72, 96, 3), 30, dtype=np.uint8)
        offset = index % 20
        frame[10 + offset : 40 + offset, 20:60] = 200
        return frame


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")
def test_state_and_rss_stay_flat_over_a_long_video(tiny_segmentor: Any) -> None:
    video = _SyntheticVideo(FRAMES)
    retained: dict[int, int] = {}
    rss: dict[int, int] = {}
    with tiny_segmentor.open_video(video) as session:
        session.add_prompt({"frame": 0, "obj_id": 1, "box": (20, 10, 60, 40)})
        window = 15  # max(num_maskmem 7, max_object_pointers_in_encoder 16) - 1
        for index, results in session.propagate(output_formats=["rle"]):
            assert set(results) == {1}
            if index in (100, 250, FRAMES - 1):
                gc.collect()
                retained[index] = session.state.retained_frames()
                rss[index] = _rss_bytes()
        assert retained == {100: 1 + window + 1, 250: 1 + window + 1, FRAMES - 1: 1 + window + 1}
        tracked = session.state.output_dict_per_obj[0]["non_cond_frame_outputs"]
        assert sorted(tracked) == list(range(FRAMES - 1 - window, FRAMES))
    assert video.made <= FRAMES + 2  # each frame decoded once (plus the prompt frame)
    assert rss[FRAMES - 1] - rss[100] < 16 * 2**20, rss


def test_close_frees_the_tracking_state(tiny_segmentor: Any) -> None:
    session = tiny_segmentor.open_video(_SyntheticVideo(12))
    session.add_prompt({"frame": 0, "obj_id": 1, "box": (20, 10, 60, 40)})
    list(session.propagate(max_frames=5))
    state = session.state
    held = weakref.ref(state.output_dict_per_obj[0]["cond_frame_outputs"][0]["maskmem_features"])
    del state
    session.close()
    gc.collect()
    assert held() is None
    assert session.closed


def test_transformers_directory_loads(tiny_video_dir: Path, tiny_segmentor: Any) -> None:
    from perceptra_seg.video.api import video_model

    loaded = video_model(tiny_segmentor)
    assert loaded.source.kind == "transformers"
    assert loaded.image_size == 64
    assert loaded.info()["model"] == "sam_v2"


def test_segmentor_close_drops_the_tracking_model(tiny_video_dir: Path) -> None:
    from perceptra_seg import Segmentor

    seg = Segmentor(
        model="sam_v2", variant="hiera_tiny", device="cpu", precision="fp32", checkpoint_path=tiny_video_dir
    )
    with seg.open_video(_SyntheticVideo(3)) as session:
        session.add_prompt({"frame": 0, "obj_id": 1, "box": (20, 10, 60, 40)})
    held = weakref.ref(seg.__dict__["_video_model"].model)
    seg.close()
    gc.collect()
    assert "_video_model" not in seg.__dict__
    assert held() is None
