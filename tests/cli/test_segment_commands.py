"""segment-box, segment-points and segment: files and JSON written by the CLI equal the SDK's results."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from perceptra_seg.utils.masks import png_to_mask, rle_to_mask
from perceptra_seg.utils.polygons import polygons_to_mask

from .conftest import Run

BOX = (20.0, 10.0, 90.0, 70.0)
POINTS = [(60.0, 40.0, 1), (10.0, 70.0, 0)]


def test_segment_box_png_and_json_match_the_sdk(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], small_segmentor: Any, tmp_path: Path
) -> None:
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    run = cli(
        "segment-box",
        "--config",
        config_file,
        "--image",
        images["coffee"],
        "--box",
        *BOX,
        "--out",
        out,
        "--overlay",
        overlay,
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    expected = small_segmentor.segment_from_box(
        images["coffee"], box=BOX, output_formats=["numpy", "rle"], return_overlay=True
    )
    np.testing.assert_array_equal(png_to_mask(out.read_bytes()), expected.mask)
    report = run.json()
    assert (report["height"], report["width"]) == (80, 120)
    assert report["out"] == str(out) and report["overlay"] == str(overlay)
    (result,) = report["results"]
    assert result["score"] == pytest.approx(expected.score, abs=1e-5)
    assert result["area"] == expected.area and tuple(result["bbox"]) == expected.bbox
    np.testing.assert_array_equal(rle_to_mask(result["rle"]), expected.mask)
    drawn = np.asarray(Image.open(overlay))
    np.testing.assert_array_equal(drawn, np.asarray(Image.open(io.BytesIO(expected.overlay_png))))


def test_segment_box_rle_format_and_human_output(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], small_segmentor: Any, tmp_path: Path
) -> None:
    out = tmp_path / ("a-long-folder-name-[red]-" * 4) / "mask.json"  # wider than a terminal, with Rich markup
    out.parent.mkdir()
    run = cli("segment-box", "-c", config_file, "-i", images["chelsea"], "-b", 5, 5, 80, 55, "-o", out, "-f", "rle")
    assert run.exit_code == 0, run.stderr
    expected = small_segmentor.segment_from_box(images["chelsea"], box=(5, 5, 80, 55), output_formats=["numpy"])
    rle = json.loads(out.read_text())
    assert rle["size"] == [60, 90]
    np.testing.assert_array_equal(rle_to_mask(rle), expected.mask)
    assert f"{expected.score:.4f}" in run.stdout and str(expected.area) in run.stdout
    assert f"written: {out}" in run.stdout


def test_segment_points_polygons_and_json_formats_match_the_sdk(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], small_segmentor: Any, tmp_path: Path
) -> None:
    expected = small_segmentor.segment_from_points(images["coffee"], points=POINTS, output_formats=["numpy"])
    point_args = [str(v) for p in POINTS for v in ("--point", *p)]
    polygons_out = tmp_path / "mask.polygons.json"
    run = cli(
        "segment-points", "-c", config_file, "-i", images["coffee"], *point_args, "-o", polygons_out, "-f", "polygons"
    )
    assert run.exit_code == 0, run.stderr
    polygons = json.loads(polygons_out.read_text())
    np.testing.assert_array_equal(polygons_to_mask(polygons, 80, 120), expected.mask)

    json_out = tmp_path / "result.json"
    run = cli("segment-points", "-c", config_file, "-i", images["coffee"], *point_args, "-o", json_out)
    assert run.exit_code == 0, run.stderr
    document = json.loads(json_out.read_text())
    assert document["score"] == pytest.approx(expected.score, abs=1e-5)
    assert document["area"] == expected.area and tuple(document["bbox"]) == expected.bbox
    assert document["model"]["model"] == "sam_v1" and document["model"]["device"] == "cpu"
    np.testing.assert_array_equal(rle_to_mask(document["rle"]), expected.mask)
    np.testing.assert_array_equal(polygons_to_mask(document["polygons"], 80, 120), expected.mask)


def test_segment_with_prompts_file_and_strategies(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], small_segmentor: Any, tmp_path: Path
) -> None:
    prompts = [
        {"box": [20, 10, 90, 70]},
        {"points": [[30, 30, 1]]},
        {"box": [0, 0, 60, 50], "points": [[20, 20, 1], [55, 45, 0]]},
    ]
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text(json.dumps({"prompts": prompts}))
    out = tmp_path / "results.json"
    run = cli("segment", "-c", config_file, "-i", images["coffee"], "--prompts", prompts_file, "-o", out)
    assert run.exit_code == 0, run.stderr
    expected = small_segmentor.segment(images["coffee"], prompts=prompts, output_formats=["numpy"])
    document = json.loads(out.read_text())
    assert document["image"] == str(images["coffee"]) and (document["height"], document["width"]) == (80, 120)
    assert [r["prompt_index"] for r in document["results"]] == [0, 1, 2]
    for got, want in zip(document["results"], expected, strict=True):
        np.testing.assert_array_equal(rle_to_mask(got["rle"]), want.mask)
        np.testing.assert_array_equal(polygons_to_mask(got["polygons"], 80, 120), want.mask)
        assert got["score"] == pytest.approx(want.score, abs=1e-5)

    prompts_file.write_text(json.dumps(prompts))  # a bare list works too
    run = cli(
        "segment", "-c", config_file, "-i", images["coffee"], "--prompts", prompts_file, "--strategy", "merge", "--json"
    )
    assert run.exit_code == 0, run.stderr
    (merged,) = run.json()["results"]
    assert merged["prompt_index"] == -1
    union = np.logical_or.reduce([r.mask for r in expected])
    np.testing.assert_array_equal(rle_to_mask(merged["rle"]), union)
    assert "polygons" not in merged  # --json on stdout keeps to RLE


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--box", 90, 10, 20, 70], 2, "x1 < x2"),
        (["--box", 500, 500, 600, 600], 2, "entirely outside"),
        (["--box", 20, 10, 90, 70, "--image", "missing.png"], 2, "image file not found"),
        (["--box", 20, 10, 90, 70, "--checkpoint", "/nowhere/sam.pth"], 1, "checkpoint not found"),
        (["--box", 20, 10, 90, 70, "--device", "tpu"], 2, "unknown device"),
        (["--box", 20, 10, 90, 70, "--model", "sam_v9"], 2, "unknown model"),
        (["--box", 20, 10, 90, 70, "--out", "/nonexistent-dir/mask.png"], 2, "output directory does not exist"),
    ],
)
def test_segment_box_errors_are_one_line_with_exit_codes(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], args: list[Any], code: int, message: str
) -> None:
    image_args = [] if "--image" in args else ["--image", images["coffee"]]
    run = cli("segment-box", "--config", config_file, *image_args, *args)
    assert run.exit_code == code
    assert run.stderr.startswith("error: ") and message in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stdout == ""


def test_config_errors_exit_2(cli: Callable[..., Run], images: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  nmae: sam_v1\n")
    run = cli("segment-box", "--config", bad, "--image", images["coffee"], "--box", 1, 1, 5, 5)
    assert run.exit_code == 2 and run.stderr == "error: invalid configuration: model.nmae: unknown key\n"
    run = cli("segment-box", "--config", tmp_path / "absent.yaml", "--image", images["coffee"], "--box", 1, 1, 5, 5)
    assert run.exit_code == 2 and "config file not found" in run.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    run = cli("config", "show", "--config", broken)
    assert run.exit_code == 2 and run.stderr.startswith("error: cannot read config file")


def test_bad_prompts_and_points(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], tmp_path: Path
) -> None:
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text("{not json")
    run = cli("segment", "-c", config_file, "-i", images["coffee"], "--prompts", prompts_file)
    assert run.exit_code == 2 and "is not valid JSON" in run.stderr
    prompts_file.write_text(json.dumps({"box": [1, 2, 3, 4]}))
    run = cli("segment", "-c", config_file, "-i", images["coffee"], "--prompts", prompts_file)
    assert run.exit_code == 2 and "must hold a list of prompt objects" in run.stderr
    prompts_file.write_text(json.dumps([{"bx": [1, 2, 3, 4]}]))
    run = cli("segment", "-c", config_file, "-i", images["coffee"], "--prompts", prompts_file)
    assert run.exit_code == 2 and "unknown prompt key" in run.stderr
    run = cli("segment-points", "-c", config_file, "-i", images["coffee"], "--point", 10, 10, 5)
    assert run.exit_code == 2 and "label must be 1" in run.stderr
    run = cli("segment-points", "-c", config_file, "-i", images["coffee"], "--point", 10, 10)  # usage error
    assert run.exit_code == 2 and "requires 3 arguments" in run.stderr


def test_debug_shows_the_traceback(cli: Callable[..., Run], config_file: Path, images: dict[str, Path]) -> None:
    run = cli("segment-box", "-c", config_file, "-i", images["coffee"], "--box", 90, 10, 20, 70, "--debug")
    assert run.exit_code == 2
    assert "Traceback (most recent call last)" in run.stderr and "InvalidInputError" in run.stderr
    assert run.stderr.rstrip().splitlines()[-1].startswith("error: box")


# --- output names must say what is written; --json errors on stdout ------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("mask.jpg", [], "--out {out} has '.jpg', but it is written as PNG (.png) or JSON (.json)"),
        ("mask", [], "--out {out} has no extension"),
        ("mask.json", ["--format", "png"], "--format png writes a PNG image, but --out {out} is named .json"),
        ("mask.png", ["--format", "rle"], "--format rle writes JSON, but --out {out} is named .png"),
    ],
)
def test_out_name_that_contradicts_the_format_is_refused_before_any_work(
    cli: Callable[..., Run],
    config_file: Path,
    images: dict[str, Path],
    tmp_path: Path,
    name: str,
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / name
    run = cli("segment-box", "-c", config_file, "-i", images["coffee"], "-b", *BOX, "--out", out, *extra)
    assert run.exit_code == 2 and message.format(out=out) in run.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_overlay_and_results_names_are_checked_too(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], tmp_path: Path
) -> None:
    overlay = tmp_path / "overlay.jpg"
    run = cli("segment-box", "-c", config_file, "-i", images["coffee"], "-b", *BOX, "--overlay", overlay)
    assert run.exit_code == 2 and f"--overlay {overlay} has '.jpg'" in run.stderr
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"box": list(BOX)}]))
    run = cli("segment", "-c", config_file, "-i", images["coffee"], "--prompts", prompts, "--out", tmp_path / "r.txt")
    assert run.exit_code == 2 and "written as JSON (.json)" in run.stderr
    run = cli("batch", "-c", config_file, "--images", tmp_path, "--prompts", prompts, "--out", tmp_path / "r.csv")
    assert run.exit_code == 2 and "written as JSON (.json)" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.json"]


def test_upper_case_png_name_gets_the_png_mask(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], small_segmentor: Any, tmp_path: Path
) -> None:
    out = tmp_path / "MASK.PNG"
    run = cli("segment-box", "-c", config_file, "-i", images["coffee"], "-b", *BOX, "--out", out)
    assert run.exit_code == 0, run.stderr
    expected = small_segmentor.segment_from_box(images["coffee"], box=BOX, output_formats=["numpy"])
    np.testing.assert_array_equal(png_to_mask(out.read_bytes()), expected.mask)


@pytest.mark.parametrize(
    ("args", "code", "exit_code", "message"),
    [
        (["--out", "mask.jpg"], "invalid_input", 2, "has '.jpg'"),
        (["--checkpoint", "missing.pth"], "model_load_error", 1, "checkpoint not found"),
        (["--device", "tpu"], "invalid_config", 2, "unknown device 'tpu'"),
    ],
)
def test_json_mode_reports_errors_as_json_on_stdout(
    cli: Callable[..., Run],
    images: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: str,
    exit_code: int,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    run = cli("segment-box", "--model", "sam_v1", "-i", images["coffee"], "-b", *BOX, *args, "--json")
    assert run.exit_code == exit_code
    error = run.json()["error"]
    assert error["code"] == code and error["exit_code"] == exit_code and message in error["message"]
    assert run.stderr.startswith("error: ") and message in run.stderr  # the human line stays on stderr


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_honour_the_umask(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], tmp_path: Path, mask: int, mode: int
) -> None:
    """Shared volumes need to read what the CLI writes: the mode is open()'s (0644 under 022), not mkstemp's 0600."""
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    previous = os.umask(mask)  # process-wide: restored below whatever happens
    try:
        run = cli(
            "segment-box", "-c", config_file, "-i", images["coffee"], "-b", *BOX, "--out", out, "--overlay", overlay
        )
    finally:
        os.umask(previous)
    assert run.exit_code == 0, run.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode and stat.S_IMODE(overlay.stat().st_mode) == mode
