"""/v1/videos on a SAM 3 server: upload, then ``propagate`` with ``{"text": ...}`` streams every instance of the
phrase, equal to Meta's video inference on the same (losslessly stored) clip; the calls a SAM 3 video has no use for
are refused with clear 400s.

The image routes' backend is a fake concept model (the video routes never use it); the video model is loaded from
the config's reduced SAM 3 checkpoint (tests/sam3_video_fixture.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from perceptra_seg.service import create_app
from perceptra_seg.utils.masks import rle_to_mask

from ..sam3_video_fixture import PHRASE, SmallSam3Video, small_sam3_video  # noqa: F401 - the fixture
from ..service.helpers import KEY_A, auth, build_config, running
from ..service.test_segment_text import FakeConceptBackend
from ..video_front.conftest import write_video

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_text_tracking_over_rest_equals_meta(small_sam3_video: SmallSam3Video, tmp_path: Path) -> None:  # noqa: F811
    path = write_video(small_sam3_video.frames, tmp_path / "clip.mkv", codec="ffv1", pix_fmt="bgr0")  # lossless
    config = build_config(small_sam3_video.config, server={"api_keys": [KEY_A]})
    with running(create_app(config, backend=FakeConceptBackend()), headers=auth(KEY_A)) as client:
        with path.open("rb") as handle:
            uploaded = client.post("/v1/videos", files={"file": ("clip.mkv", handle, "video/x-matroska")})
        assert uploaded.status_code == 200, uploaded.text
        video = uploaded.json()["video_id"]
        assert uploaded.json()["num_frames"] == len(small_sam3_video.frames)
        box = client.post(f"/v1/videos/{video}/prompts", json={"frame": 0, "obj_id": 1, "box": [0, 0, 9, 9]})
        assert box.status_code == 400 and "propagate" in box.json()["error"]["message"]
        no_text = client.post(f"/v1/videos/{video}/propagate", json={})
        assert no_text.status_code == 400 and "'text'" in no_text.json()["error"]["message"]
        assert client.post(f"/v1/videos/{video}/propagate", json={"text": ""}).status_code == 422
        backwards = client.post(f"/v1/videos/{video}/propagate", json={"text": PHRASE, "reverse": True})
        assert backwards.status_code == 400 and "forward" in backwards.json()["error"]["message"]
        streamed = client.post(f"/v1/videos/{video}/propagate", json={"text": PHRASE})
        assert streamed.status_code == 200, streamed.text
        lines = [json.loads(line) for line in streamed.text.splitlines() if line]
        assert client.delete(f"/v1/videos/{video}").status_code == 204
    reference = small_sam3_video.answers
    assert [line["frame"] for line in lines] == sorted(reference)
    for line in lines:
        answer = reference[line["frame"]]
        expected = {
            int(i): (float(s), m)
            for i, s, m in zip(*(answer[k] for k in ("out_obj_ids", "out_probs", "out_binary_masks")), strict=True)
        }
        got = {o["obj_id"]: o for o in line["objects"]}
        assert sorted(got) == sorted(expected)
        for obj_id, (score, mask) in expected.items():
            assert got[obj_id]["label"] == PHRASE
            assert abs(got[obj_id]["score"] - score) < 1e-3
            decoded = rle_to_mask(got[obj_id]["rle"]).astype(bool)
            union = np.logical_or(decoded, mask).sum()
            assert union == 0 or np.logical_and(decoded, mask).sum() / union >= 0.99
