"""``segmentor-cli segment-auto --text`` (issue 19): its refusals, all before a model loads, and the categories file
that a re-run must agree with. A run on a real SAM 3 model is in tests/parity/test_sam3.py (it shares that model).

A sam3 checkpoint path that does not exist would fail to load (ModelLoadError, exit 1): exit 2 shows that the refusal
came first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .conftest import Run


@pytest.fixture
def sam3_args(tmp_path: Path) -> list[str]:
    return ["--model", "sam3", "--checkpoint", str(tmp_path / "absent" / "sam3.pt"), "--json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no segment-everything generator: give --text"),
        (["-t", "car", "--points-per-side", "4"], "--points-per-side apply to segmenting everything"),
        (["-t", "car", "-t", "person", "-t", "car"], "repeated: ['car']"),
        (["-t", " "], "non-empty phrase"),
        (["-t", "car", "--threshold", "1.5"], "threshold must be a number in [0, 1)"),
    ],
)
def test_refusals_before_sam3_loads(
    cli: Callable[..., Run],
    images: dict[str, Path],
    tmp_path: Path,
    sam3_args: list[str],
    args: list[str],
    message: str,
) -> None:
    run = cli("segment-auto", "-i", images["coffee"], "-o", tmp_path / "out.json", *args, *sam3_args)
    assert run.exit_code == 2, run.stdout + run.stderr
    assert run.json()["error"]["code"] == "invalid_input" and message in run.json()["error"]["message"]
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.categories.json").exists()


def test_text_on_a_model_without_text_prompts(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], tmp_path: Path
) -> None:
    run = cli(
        "segment-auto", "-c", config_file, "-i", images["coffee"], "-o", tmp_path / "o.json", "-t", "car", "--json"
    )
    assert run.exit_code == 2
    assert run.json()["error"]["code"] == "text_prompts_unsupported"


def test_threshold_without_text(cli: Callable[..., Run], images: dict[str, Path], tmp_path: Path) -> None:
    run = cli(
        "segment-auto", "--model", "demo", "-i", images["coffee"], "-o", tmp_path / "o.json", "--threshold", "0.3"
    )
    assert run.exit_code == 2 and "--threshold applies to --text only" in run.stderr


def test_a_rerun_must_keep_the_phrases_and_the_mode(
    cli: Callable[..., Run], images: dict[str, Path], tmp_path: Path, sam3_args: list[str]
) -> None:
    out = tmp_path / "found.json"
    out.write_text("[]\n")  # written by segmenting everything: no categories file
    run = cli("segment-auto", "-i", images["coffee"], "-o", out, "-t", "car", *sam3_args)
    assert run.exit_code == 2 and "written without --text" in run.json()["error"]["message"]

    sidecar = tmp_path / "found.categories.json"
    sidecar.write_text(json.dumps({"categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}))
    run = cli("segment-auto", "-i", images["coffee"], "-o", out, "-t", "car", "-t", "person", *sam3_args)
    assert run.exit_code == 2 and "phrases ['person', 'car'], not ['car', 'person']" in run.json()["error"]["message"]

    run = cli("segment-auto", "--model", "demo", "-i", images["coffee"], "-o", out, "--json")
    assert run.exit_code == 2 and "holds --text results" in run.json()["error"]["message"]

    yolo = tmp_path / "labels_dir"
    yolo.mkdir()
    (yolo / "categories.json").write_text(json.dumps({"categories": [{"id": 1, "name": "bus"}]}))
    run = cli("segment-auto", "-i", images["coffee"], "-o", yolo, "--format", "yolo-seg", "-t", "car", *sam3_args)
    assert run.exit_code == 2 and "phrases ['bus'], not ['car']" in run.json()["error"]["message"]
    assert sorted(p.name for p in yolo.iterdir()) == ["categories.json"]  # data.yaml not touched

    # the same phrases pass every check and reach the model, which then fails to load (exit 1)
    run = cli("segment-auto", "-i", images["coffee"], "-o", out, "-t", "person", "-t", "car", *sam3_args)
    assert run.exit_code == 1 and run.json()["error"]["code"] != "invalid_input"


def test_yolo_class_names_are_the_phrases(tmp_path: Path) -> None:
    from perceptra_seg.cli.batch import read_results
    from perceptra_seg.cli.batch_output import open_writer

    names = {1: "red car", 2: 'a "quoted": phrase'}
    open_writer("yolo-seg", tmp_path / "yolo", [2, 1], read_results, names)
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["nc"] == 2 and data["names"] == {0: "red car", 1: 'a "quoted": phrase'}
