"""SAM 3 text tracking from the front ends, against Meta's video inference on the same (losslessly stored) clip:
``/v1/videos`` on a SAM 3 server (upload, then ``propagate`` with ``{"text": ...}`` streams every instance of the
phrase; the calls a SAM 3 video has no use for are refused with clear 400s) and ``segmentor-cli track --text``
(YouTube-VIS file).

The image routes' backend is a fake concept model (the video routes never use it); the video model is loaded from
the config's reduced SAM 3 checkpoint (tests/sam3_video_fixture.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as coco_mask

pytest.importorskip("fastapi")

from perceptra_seg.service import create_app
from perceptra_seg.utils.masks import rle_to_mask

from ..sam3_bare import bare_sam3  # noqa: F401 - the fixture
from ..sam3_video_fixture import PHRASE, SmallSam3Video
from ..service.helpers import KEY_A, auth, build_config, running
from ..service.test_segment_text import FakeConceptBackend
from ..video_front.conftest import write_video

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_text_tracking_over_rest_equals_meta(small_sam3_video: SmallSam3Video, tmp_path: Path) -> None:
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
    expected = _expected(small_sam3_video)
    assert [line["frame"] for line in lines] == sorted(expected)
    for line in lines:
        got = {o["obj_id"]: o for o in line["objects"]}
        assert sorted(got) == sorted(expected[line["frame"]])
        for obj_id, (score, mask) in expected[line["frame"]].items():
            assert got[obj_id]["label"] == PHRASE
            assert abs(got[obj_id]["score"] - score) < 1e-3
            decoded = rle_to_mask(got[obj_id]["rle"]).astype(bool)
            union = np.logical_or(decoded, mask).sum()
            assert union == 0 or np.logical_and(decoded, mask).sum() / union >= 0.99


def _expected(case: SmallSam3Video) -> dict[int, dict[int, tuple[float, np.ndarray]]]:
    """Meta's answer: frame → obj_id → (score, bool mask [H, W])."""
    keys = ("out_obj_ids", "out_probs", "out_binary_masks")
    return {
        frame: {int(i): (float(s), m) for i, s, m in zip(*(answer[k] for k in keys), strict=True)}
        for frame, answer in case.answers.items()
    }


def test_cli_track_text_writes_metas_instances(small_sam3_video: SmallSam3Video, tmp_path: Path) -> None:
    pytest.importorskip("typer")
    from typer.testing import CliRunner

    from perceptra_seg.cli import app

    frames = tmp_path / "frames"
    frames.mkdir()
    for index, frame in enumerate(small_sam3_video.frames):
        Image.fromarray(frame).save(frames / f"{index:05d}.png")
    config = tmp_path / "sam3.yaml"
    config.write_text(yaml.safe_dump(small_sam3_video.config), encoding="utf-8")
    out = tmp_path / "results.json"
    run: Any = CliRunner().invoke(
        app, ["track", str(frames), "--text", f"0:{PHRASE}", "--out", str(out), "--config", str(config), "--json"]
    )
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    assert summary["frames_tracked"] == len(small_sam3_video.frames)
    entries = {entry["obj_id"]: entry for entry in json.loads(out.read_text(encoding="utf-8"))}
    expected = _expected(small_sam3_video)
    reported = {obj_id for answer in expected.values() for obj_id in answer}
    assert reported <= set(entries)
    for frame, answer in expected.items():
        for obj_id, entry in entries.items():
            rle = entry["segmentations"][frame]
            if obj_id not in answer:
                assert rle is None, (frame, obj_id)
                continue
            mask = answer[obj_id][1]
            got = coco_mask.decode(rle).astype(bool) if rle is not None else np.zeros_like(mask)
            union = np.logical_or(got, mask).sum()
            assert union == 0 or np.logical_and(got, mask).sum() / union >= 0.99, (frame, obj_id)
    mixed = ["--text", "0:car", "--box", "0:1:1,1,5,5", "--out", str(tmp_path / "x.json"), "--config", str(config)]
    bad = CliRunner().invoke(app, ["track", str(frames), *mixed])
    assert bad.exit_code == 2 and "mixed" in bad.output


def test_a_sam3_checkpoint_without_its_tracker_fails_at_upload(bare_sam3: dict, tmp_path: Path) -> None:  # noqa: F811
    """The video model loads when a video is uploaded (as a SAM 2 session opens then): a checkpoint with only the
    detector is a clear error there, not at every propagate."""
    path = write_video([np.zeros((32, 48, 3), np.uint8)] * 2, tmp_path / "clip.mkv", codec="ffv1", pix_fmt="bgr0")
    config = build_config(bare_sam3, server={"api_keys": [KEY_A]})
    with running(create_app(config, backend=FakeConceptBackend()), headers=auth(KEY_A)) as client:
        with path.open("rb") as handle:
            uploaded = client.post("/v1/videos", files={"file": ("clip.mkv", handle, "video/x-matroska")})
        assert uploaded.status_code == 503, uploaded.text
        assert "no SAM 3 video tracker" in uploaded.json()["error"]["message"]
        assert client.get("/v1/healthz").status_code == 200
