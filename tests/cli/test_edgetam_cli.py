"""The CLI runs EdgeTAM by name (``--model edgetam``) and lists it in its catalogue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from perceptra_seg import Segmentor
from perceptra_seg.utils.masks import png_to_mask, rle_to_mask

from .conftest import Run


def test_segment_box_with_model_edgetam_matches_the_sdk(
    cli: Callable[..., Run],
    images: dict[str, Path],
    small_edgetam: tuple[Path, Any, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The YAML leaves model.name at its default (sam_v2); ``--model edgetam`` picks EdgeTAM for the file."""
    _, _, config = small_edgetam
    settings = {**config, "model": {k: v for k, v in config["model"].items() if k != "name"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    out = tmp_path / "mask.png"
    box = ("-b", "20", "10", "90", "70")
    run = cli("segment-box", "-c", path, "--model", "edgetam", "-i", images["coffee"], *box, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    expected = Segmentor(config).segment_from_box(images["coffee"], box=(20, 10, 90, 70), output_formats=["numpy"])
    assert 0 < expected.mask.sum() < expected.mask.size
    np.testing.assert_array_equal(png_to_mask(out.read_bytes()), expected.mask)
    (result,) = run.json()["results"]
    assert result["score"] == pytest.approx(expected.score, abs=1e-5)
    np.testing.assert_array_equal(rle_to_mask(result["rle"]), expected.mask)


def test_info_lists_edgetam_with_file_licence_and_source(cli: Callable[..., Run]) -> None:
    report = cli("info", "--device", "cpu", "--json").json()
    entries = {(m["model"], m["variant"]): m for m in report["models"]}
    edgetam = entries[("edgetam", "repvit_m1")]
    assert edgetam["file"] == "edgetam.pt"
    assert edgetam["url"] == "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt"
    assert edgetam["licence"] == "Apache-2.0" and edgetam["source"] == "https://github.com/facebookresearch/EdgeTAM"
    assert "edgetam: repvit_m1" in cli("info", "--device", "cpu").stdout
