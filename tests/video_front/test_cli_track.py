"""``segmentor-cli track`` end to end: the YouTube-VIS file, palette PNGs and overlay equal the SDK's ``track``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import yaml
from PIL import Image

pytest.importorskip("typer")

from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from perceptra_seg import Segmentor
from perceptra_seg.cli import app

from .conftest import SDK_PROMPTS

BOX = "0:1:10,8,50,40"
POINT = "2:3:70,30,1"


def _run(*args: Any) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, video_sections: dict[str, Any]) -> Path:
    path = tmp_path_factory.mktemp("track_cli") / "config.yaml"
    path.write_text(yaml.safe_dump(video_sections), encoding="utf-8")
    return path


@pytest.mark.parametrize("reverse", [False, True])
def test_track_writes_what_the_sdk_tracks(
    config_file: Path,
    clip_path: Path,
    clip_frames: list[np.ndarray],
    sdk: Segmentor,
    forward_masks: dict[int, dict[int, np.ndarray]],
    tmp_path: Path,
    reverse: bool,
) -> None:
    out, masks, overlay = tmp_path / "results.json", tmp_path / "masks", tmp_path / "overlay.mp4"
    extra = ["--reverse", "--start-frame", 2, "--max-frames", 2] if reverse else ["--max-frames", 4]
    run = _run(
        "track", clip_path, "--box", BOX, "--point", POINT, "--out", out, "--masks-dir", masks,
        "--overlay", overlay, "--video-id", 7, "--config", config_file, "--json", *extra,
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    if reverse:
        stream = sdk.track(
            str(clip_path), SDK_PROMPTS, output_formats=("numpy",), reverse=True, start_frame=2, max_frames=2
        )
        expected = {frame: {obj: r.mask for obj, r in results.items()} for frame, results in stream}
    else:  # the first frames of a whole forward run are the frames of a shorter one
        expected = {frame: forward_masks[frame] for frame in range(4)}
    order = [2, 1] if reverse else [0, 1, 2, 3]
    assert list(expected) == order
    summary = json.loads(run.stdout)
    assert summary["frames_tracked"] == len(order) and summary["objects"] == [1, 3]
    assert summary["num_frames"] == len(clip_frames)
    # YouTube-VIS: one entry per object, one segmentation per video frame, null where not tracked or empty
    entries = json.loads(out.read_text())
    assert [e["obj_id"] for e in entries] == [1, 3] and {e["video_id"] for e in entries} == {7}
    for entry in entries:
        assert len(entry["segmentations"]) == len(clip_frames)
        for frame, seg_rle in enumerate(entry["segmentations"]):
            mask = expected.get(frame, {}).get(entry["obj_id"])
            if mask is None or not mask.any():
                assert seg_rle is None
                continue
            decoded = coco_mask.decode({"size": seg_rle["size"], "counts": seg_rle["counts"].encode()})
            np.testing.assert_array_equal(decoded.astype(bool), mask)
    # palette PNGs: pixel value = object id (the smaller id on overlaps)
    assert sorted(p.name for p in masks.iterdir()) == [f"{f:05d}.png" for f in sorted(order)]
    for frame in order:
        labels = np.array(Image.open(masks / f"{frame:05d}.png"))
        one, three = expected[frame][1], expected[frame][3]
        np.testing.assert_array_equal(labels == 1, one)
        np.testing.assert_array_equal(labels == 3, three & ~one)
    # overlay: one video frame per tracked frame
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(order)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--box", "0:1:1,2,3"], "4 numbers"),
        (["--box", "0:1:1,2,3,4", "--overlay", "o.avi"], "*.mp4"),
        (["--point", "0:1:5,5,1", "--masks-dir", "m", "--point", "0:300:5,5,1"], "1..255"),
        (["--out-dir-missing"], None),
    ],
)
def test_bad_arguments_exit_2_before_the_model_loads(
    clip_path: Path, tmp_path: Path, args: list[str], message: str | None
) -> None:
    if message is None:  # an output folder that does not exist
        run = _run("track", clip_path, "--box", "0:1:1,2,3,4", "--out", tmp_path / "missing" / "r.json")
        assert run.exit_code == 2 and "does not exist" in run.stderr
        return
    fixed = [str(tmp_path / a) if a in ("o.avi", "m") else a for a in args]
    run = _run("track", clip_path, *fixed, "--out", tmp_path / "r.json", "--checkpoint", tmp_path / "none.pt")
    assert run.exit_code == 2, run.stderr
    assert message in run.stderr


def test_missing_video_and_json_error(tmp_path: Path) -> None:
    run = _run("track", tmp_path / "nope.mp4", "--box", "0:1:1,2,3,4", "--out", tmp_path / "r.json", "--json")
    assert run.exit_code == 2
    assert json.loads(run.stdout)["error"]["code"] == "invalid_input"
