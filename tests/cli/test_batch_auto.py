"""``batch --auto``: automatic masks for every listed image, the records ``segment-auto`` writes, resumable; and
``--auto`` / ``--prompts`` / generator flags that do not go together."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from perceptra_seg.cli.batch import stable_image_id
from perceptra_seg.demo.scenes import HELDOUT_SEED, generate_scenes
from perceptra_seg.utils.masks import rle_to_mask

MODEL = ("--model", "demo", "--device", "cpu")
OPTIONS = ("--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small demo scenes, one in a subfolder (names ``scene0.png``, ``scene1.png``, ``sub/scene2.png``)."""
    folder = tmp_path_factory.mktemp("batch_auto_images")
    for index, scene in enumerate(generate_scenes(HELDOUT_SEED, 3, [(96, 128)])):
        target = folder / ("sub" if index == 2 else "") / f"scene{index}.png"
        target.parent.mkdir(exist_ok=True)
        Image.fromarray(scene.image).save(target)
    return folder


def test_batch_auto_writes_the_records_of_segment_auto_and_resumes(
    cli: Callable[..., Any], scenes: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "segment_auto.json"
    run = cli("segment-auto", "--image", scenes, "--out", reference, *OPTIONS, *MODEL, "--json")
    assert run.exit_code == 0, run.stderr
    out = tmp_path / "batch_auto.json"
    run = cli("batch", "--images", scenes, "--auto", "--out", out, *OPTIONS, *MODEL, "--json")
    assert run.exit_code == 0, run.stderr
    summary = run.json()
    assert (summary["images"], summary["processed"], summary["failed"]) == (3, 3, [])
    got, want = json.loads(out.read_text()), json.loads(reference.read_text())
    assert summary["results_written"] == len(got) > 3
    names = ["scene0.png", "scene1.png", "sub/scene2.png"]
    assert sorted({r["image_id"] for r in got}) == sorted(stable_image_id(n) for n in names)
    assert got == want  # same ids, category, scores, boxes and RLE strings, in the same order
    assert out.read_bytes() == reference.read_bytes()
    for record in got:  # real COCO RLEs of the image's size
        assert rle_to_mask(record["segmentation"]).shape == (96, 128) and record["category_id"] == 1
        assert "annotation_id" not in record

    coarse = tmp_path / "coarse.json"  # the generator flags reach the generator: a 2 × 2 grid gives fewer masks
    flags = ("--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0")
    run = cli("batch", "--images", scenes, "--auto", "--out", coarse, *flags, *MODEL, "--json")
    assert run.exit_code == 0, run.stderr
    assert 0 < run.json()["results_written"] < len(got)

    kept = [r for r in got if r["image_id"] != stable_image_id("scene1.png")]
    out.write_text(json.dumps(kept))  # scene1 lost: a re-run segments only it, and ends with the same records
    run = cli("batch", "--images", scenes, "--auto", "--out", out, *OPTIONS, *MODEL, "--json")
    assert run.exit_code == 0, run.stderr
    assert (run.json()["processed"], run.json()["skipped_existing"]) == (1, 2)
    again = json.loads(out.read_text())
    assert sorted(json.dumps(r) for r in again) == sorted(json.dumps(r) for r in got)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--auto", "--prompts", "PROMPTS"], "give exactly one of --prompts FILE and --auto"),
        ([], "give exactly one of --prompts FILE and --auto"),
        (["--prompts", "PROMPTS", "--points-per-side", "4"], "--points-per-side apply to --auto only"),
        (["--auto", "--pred-iou-thresh", "1.5"], "pred_iou_thresh"),
    ],
)
def test_auto_and_prompts_go_alone(
    cli: Callable[..., Any], scenes: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"scene0.png": [{"box": [0, 0, 10, 10]}]}))
    extra = [str(prompts) if item == "PROMPTS" else item for item in extra]
    out = tmp_path / "r.json"
    run = cli("batch", "--images", scenes, "--out", out, *extra, *MODEL)
    assert run.exit_code == 2 and message in run.stderr
    assert not out.exists()
