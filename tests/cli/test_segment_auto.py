"""``segmentor-cli segment-auto`` (issue 17): a COCO results file of the SDK's automatic masks, resumable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from perceptra_seg import Segmentor
from perceptra_seg.cli.batch import stable_image_id
from perceptra_seg.demo.scenes import HELDOUT_SEED, generate_scenes
from perceptra_seg.utils.masks import rle_to_mask

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

MODEL = ("--model", "demo", "--device", "cpu")
OPTIONS = ("--points-per-side", "6", "--pred-iou-thresh", "0", "--stability-score-thresh", "0")
SDK_OPTIONS = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("auto_images")
    for index, scene in enumerate(generate_scenes(HELDOUT_SEED, 2, [(160, 192)])):
        target = folder / ("sub" if index else "") / f"scene{index}.png"
        target.parent.mkdir(exist_ok=True)
        Image.fromarray(scene.image).save(target)
    return folder


def test_a_directory_gives_the_sdks_masks_as_coco_results_and_resumes(
    cli: Callable[..., Any], scenes: Path, tmp_path: Path
) -> None:
    out, overlays = tmp_path / "auto.json", tmp_path / "overlays"
    overlays.mkdir()
    run = cli("segment-auto", "--image", scenes, "--out", out, "--overlays", overlays, *OPTIONS, *MODEL, "--json")
    assert run.exit_code == 0, run.stderr
    summary = run.json()
    assert (summary["images"], summary["processed"], summary["failed"]) == (2, 2, [])
    records = json.loads(out.read_text())
    assert summary["results_written"] == len(records) > 0
    names = {"scene0.png": scenes / "scene0.png", "sub/scene1.png": scenes / "sub" / "scene1.png"}
    with Segmentor(model="demo", device="cpu") as seg:
        for name, path in names.items():
            image = np.asarray(Image.open(path).convert("RGB"))
            want = seg.generate(image, output_formats=["numpy"], **SDK_OPTIONS)
            got = [r for r in records if r["image_id"] == stable_image_id(name)]
            assert len(got) == len(want)
            for record, result in zip(got, want, strict=True):
                np.testing.assert_array_equal(rle_to_mask(record["segmentation"]), result.mask)
                assert record["score"] == pytest.approx(result.score, abs=1e-6)
                assert record["stability_score"] == pytest.approx(result.stability_score, abs=1e-6)
    assert sorted(p.name for p in overlays.iterdir()) == ["scene0.png", "sub__scene1.png"]
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": stable_image_id(n), "height": 160, "width": 192} for n in names],
        "annotations": [],
        "categories": [{"id": 1, "name": "object"}],
    }
    ground_truth.createIndex()
    loaded = ground_truth.loadRes(str(out))
    assert len(loaded.getAnnIds()) == len(records)
    again = cli("segment-auto", "--image", scenes, "--out", out, *OPTIONS, *MODEL, "--json")
    assert again.exit_code == 0 and again.json()["skipped_existing"] == 2 and again.json()["processed"] == 0
    assert json.loads(out.read_text()) == records


def test_bad_images_are_reported_and_bad_options_refused(cli: Callable[..., Any], scenes: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "fine.png").write_bytes((scenes / "scene0.png").read_bytes())
    out = tmp_path / "mixed.json"
    run = cli("segment-auto", "--image", folder, "--out", out, *OPTIONS, *MODEL, "--json")
    assert run.exit_code == 1
    assert [f["image"] for f in run.json()["failed"]] == ["broken.png"] and run.json()["processed"] == 1
    assert {r["image_id"] for r in json.loads(out.read_text())} == {stable_image_id("fine.png")}
    bad = cli("segment-auto", "--image", folder, "--out", tmp_path / "x.json", "--pred-iou-thresh", "7", *MODEL)
    assert bad.exit_code == 2 and "pred_iou_thresh" in bad.stderr
    assert not (tmp_path / "x.json").exists()
    wrong = cli("segment-auto", "--image", folder, "--out", tmp_path / "x.png", *MODEL)
    assert wrong.exit_code == 2 and ".json" in wrong.stderr


def test_polygon_and_yolo_outputs(cli: Callable[..., Any], scenes: Path, tmp_path: Path) -> None:
    single = scenes / "scene0.png"
    polygons = tmp_path / "polygons.json"
    run = cli("segment-auto", "--image", single, "--out", polygons, "--format", "coco-polygons", *OPTIONS, *MODEL)
    assert run.exit_code == 0, run.stderr
    records = json.loads(polygons.read_text())
    assert records and all(isinstance(r["segmentation"], list) and "stability_score" in r for r in records)
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": stable_image_id("scene0.png"), "height": 160, "width": 192}],
        "annotations": [],
        "categories": [{"id": 1, "name": "object"}],
    }
    ground_truth.createIndex()
    assert len(ground_truth.loadRes(str(polygons)).getAnnIds()) == len(records)
    yolo = tmp_path / "yolo"
    run = cli("segment-auto", "--image", single, "--out", yolo, "--format", "yolo-seg", *OPTIONS, *MODEL)
    assert run.exit_code == 0, run.stderr
    lines = (yolo / "labels" / "scene0.txt").read_text().splitlines()
    assert 0 < len(lines) <= len(records) and all(line.startswith("0 ") for line in lines)
    assert (yolo / "data.yaml").is_file() and (yolo / "index.json").is_file()
