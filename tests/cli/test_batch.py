"""batch: COCO and prompt-mapping inputs, COCO results output, resuming, and failed images."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perceptra_seg.cli.batch import plan_jobs, stable_image_id
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.utils.masks import rle_to_mask

from .conftest import Run


@pytest.fixture
def image_dir(tmp_path: Path, images: dict[str, Path]) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(images["coffee"], folder / "coffee.png")
    shutil.copy(images["chelsea"], folder / "sub" / "chelsea.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _coco_annotations() -> dict[str, Any]:
    return {
        "images": [
            {"id": 42, "file_name": "coffee.png", "width": 120, "height": 80},
            {"id": 7, "file_name": "chelsea.jpg", "width": 90, "height": 60},
            {"id": 9, "file_name": "elsewhere.jpg", "width": 10, "height": 10},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 3, "bbox": [20, 10, 70, 60]},
            {"id": 2, "image_id": 42, "category_id": 5, "bbox": [0, 0, 60, 50]},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [5, 5, 75, 50]},
        ],
        "categories": [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}],
    }


def test_batch_from_coco_annotations_matches_the_sdk_and_resumes(
    cli: Callable[..., Run], config_file: Path, image_dir: Path, small_segmentor: Any, tmp_path: Path
) -> None:
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps(_coco_annotations()))
    out = tmp_path / "results.json"
    run = cli("batch", "-c", config_file, "--images", image_dir, "--prompts", coco, "--out", out, "--json")
    assert run.exit_code == 0, run.stderr
    summary = run.json()
    assert summary["processed"] == 2 and summary["failed"] == [] and summary["results_written"] == 3
    assert summary["prompt_entries_without_image"] == 1  # elsewhere.jpg

    results = json.loads(out.read_text())
    # image-name order (coffee.png < sub/chelsea.jpg, matched to COCO's chelsea.jpg by file name)
    assert [(r["image_id"], r["category_id"]) for r in results] == [(42, 3), (42, 5), (7, 3)]
    expected_cat = small_segmentor.segment(
        image_dir / "sub" / "chelsea.jpg", boxes=[[5, 5, 80, 55]], output_formats=["numpy"]
    )
    expected_coffee = small_segmentor.segment(
        image_dir / "coffee.png", boxes=[[20, 10, 90, 70], [0, 0, 60, 50]], output_formats=["numpy"]
    )
    for got, want in zip(results, expected_coffee + expected_cat, strict=True):
        mask = rle_to_mask(got["segmentation"])
        np.testing.assert_array_equal(mask, want.mask)
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
        assert got["area"] == want.area
        x1, y1, x2, y2 = want.bbox
        assert got["bbox"] == [x1, y1, x2 - x1, y2 - y1]  # COCO XYWH

    before = out.read_text()
    run = cli("batch", "-c", config_file, "--images", image_dir, "--prompts", coco, "--out", out, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["processed"] == 0 and run.json()["skipped_existing"] == 2
    assert out.read_text() == before


def test_batch_reports_a_failed_image_and_a_rerun_completes_only_that_one(
    cli: Callable[..., Run],
    config_file: Path,
    image_dir: Path,
    images: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEGMENTOR_INPUT_MAX_PROMPTS", "1")  # coffee.png's two prompts go to the model in two calls
    listing = tmp_path / "list.txt"
    listing.write_text(f"# images\n{image_dir / 'coffee.png'}\n\nbroken.png\n")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps(
            {
                "coffee.png": [{"box": [20, 10, 90, 70], "category_id": 2}, {"points": [[30, 30, 1]]}],
                "broken.png": [{"box": [1, 1, 5, 5]}],
            }
        )
    )
    out = tmp_path / "results.json"
    run = cli("batch", "-c", config_file, "--images", listing, "--prompts", prompts, "--out", out)
    assert run.exit_code == 1
    assert "failed: broken.png: " in run.stderr
    assert "1 image(s) segmented, 0 already in" in run.stdout and "1 failed" in run.stdout
    first = json.loads(out.read_text())
    assert [(r["image_id"], r["category_id"]) for r in first] == [
        (stable_image_id("coffee.png"), 2),
        (stable_image_id("coffee.png"), 1),
    ]

    shutil.copy(images["coffee"], tmp_path / "broken.png")  # "fix" the image, then resume
    run = cli("batch", "-c", config_file, "--images", listing, "--prompts", prompts, "--out", out, "--json")
    assert run.exit_code == 0, run.stderr
    summary = run.json()
    assert summary["processed"] == 1 and summary["skipped_existing"] == 1 and summary["results_written"] == 1
    second = json.loads(out.read_text())
    assert second[:2] == first and second[2]["image_id"] == stable_image_id("broken.png")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".results.json")] == []  # no temp files left


def test_batch_input_errors(cli: Callable[..., Run], config_file: Path, image_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"box": [1, 2, 3, 4]}]))
    run = cli("batch", "-c", config_file, "--images", image_dir, "--prompts", prompts, "--out", tmp_path / "r.json")
    assert run.exit_code == 2 and "must be a COCO annotations file" in run.stderr
    out = tmp_path / "not_results.json"
    out.write_text(json.dumps({"some": "thing"}))
    prompts.write_text(json.dumps({"coffee.png": [{"box": [1, 2, 30, 40]}]}))
    run = cli("batch", "-c", config_file, "--images", image_dir, "--prompts", prompts, "--out", out)
    assert run.exit_code == 2 and "is not a COCO results list" in run.stderr
    run = cli("batch", "-c", config_file, "--images", tmp_path / "nowhere", "--prompts", prompts, "--out", out)
    assert run.exit_code == 2 and "neither a directory nor a file" in run.stderr


def test_plan_jobs_matching_rules(image_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"sub/chelsea.jpg": [{"box": [1, 1, 9, 9]}], "coffee.png": [], "gone.png": []}))
    jobs, without_prompts, without_image = plan_jobs(image_dir, prompts)
    assert [(j.name, j.image_id, j.categories) for j in jobs] == [
        ("sub/chelsea.jpg", stable_image_id("sub/chelsea.jpg"), [1])
    ]
    assert without_prompts == ["coffee.png"] and without_image == ["coffee.png", "gone.png"]

    coco = _coco_annotations()
    coco["annotations"].append({"id": 4, "image_id": 1234, "bbox": [0, 0, 1, 1]})
    prompts.write_text(json.dumps(coco))
    with pytest.raises(InvalidInputError, match=r"annotations\[3\] needs an 'image_id' listed in 'images'"):
        plan_jobs(image_dir, prompts)
    assert 0 <= stable_image_id("a.jpg") < 2**31 and stable_image_id("a.jpg") == stable_image_id("a.jpg")
