"""The CLI selects the models added after SAM 1/2 by ``--model``: its files equal the SDK's results."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from perceptra_seg import Segmentor
from perceptra_seg.utils.masks import png_to_mask, rle_to_mask

from .conftest import Run

BOX = (20.0, 10.0, 90.0, 70.0)


def test_segment_box_with_model_sam_hq_matches_the_sdk(
    cli: Callable[..., Run],
    images: dict[str, Path],
    small_sam_hq: tuple[Any, Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The YAML leaves model.name at its default (sam_v2); ``--model sam_hq`` picks SAM-HQ for the HQ file."""
    _, _, config = small_sam_hq
    settings = {**config, "model": {k: v for k, v in config["model"].items() if k != "name"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    out = tmp_path / "mask.png"
    run = cli("segment-box", "-c", path, "--model", "sam_hq", "-i", images["coffee"], "-b", *BOX, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    expected = Segmentor(config).segment_from_box(images["coffee"], box=BOX, output_formats=["numpy"])
    np.testing.assert_array_equal(png_to_mask(out.read_bytes()), expected.mask)
    (result,) = run.json()["results"]
    assert result["score"] == pytest.approx(expected.score, abs=1e-5)
    np.testing.assert_array_equal(rle_to_mask(result["rle"]), expected.mask)


def test_info_lists_the_catalogue_with_licence_and_source(cli: Callable[..., Run]) -> None:
    report = cli("info", "--device", "cpu", "--json").json()
    entries = {(m["model"], m["variant"]): m for m in report["models"]}
    hq = entries[("sam_hq", "vit_l")]
    assert hq["file"] == "sam_hq_vit_l.pth" and hq["url"].endswith("/lkeab/hq-sam/resolve/main/sam_hq_vit_l.pth")
    assert hq["licence"] == "Apache-2.0" and hq["source"] == "https://github.com/SysCV/sam-hq"
    assert entries[("sam_v1", "vit_b")]["source"] == "https://github.com/facebookresearch/segment-anything"
    text = cli("info", "--device", "cpu").stdout
    assert "sam_hq: vit_b, vit_l, vit_h, vit_tiny" in text and "mobile_sam: vit_t" in text


def test_precision_auto_does_not_reuse_sam1_measurements(cli: Callable[..., Run], monkeypatch: Any) -> None:
    """SAM 1 vit_b's bf16 measurement must not pick bf16 for SAM-HQ vit_b (a different decoder, not measured)."""
    from tests.cpus import AVX512_BF16, pretend_cpu

    pretend_cpu(monkeypatch, AVX512_BF16)
    sam1 = cli("info", "--model", "sam_v1", "--variant", "vit_b", "--device", "cpu", "--json").json()["precision"]
    hq = cli("info", "--model", "sam_hq", "--variant", "vit_b", "--device", "cpu", "--json").json()["precision"]
    assert sam1["resolved"] == "bf16"
    assert hq["resolved"] == "fp32" and "sam_hq/vit_b in bf16 is not measured" in hq["reason"]


def test_segment_points_with_model_mobile_sam_matches_the_sdk(
    cli: Callable[..., Run],
    images: dict[str, Path],
    small_mobile_sam: tuple[Any, Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    _, _, config = small_mobile_sam
    settings = {**config, "model": {k: v for k, v in config["model"].items() if k != "name"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    out = tmp_path / "mask.json"
    point = ("--point", "60", "40", "1")
    run = cli(
        "segment-points", "-c", path, "--model", "mobile_sam", "-i", images["chelsea"], *point, "-o", out, "-f", "rle"
    )
    assert run.exit_code == 0, run.stderr
    expected = Segmentor(config).segment_from_points(images["chelsea"], [(60, 40, 1)], output_formats=["numpy"])
    np.testing.assert_array_equal(rle_to_mask(json.loads(out.read_text())), expected.mask)
