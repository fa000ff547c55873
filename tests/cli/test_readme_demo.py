"""The README's main-job command (`make demo`), run exactly as the Makefile writes it: offline with the packaged
demo model, and with a real checkpoint configured through the environment."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from perceptra_seg.demo.evaluation import mask_iou
from perceptra_seg.demo.scenes import sample_scene

from ..conftest import build_reference_sam2, save_meta_checkpoint

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ["mask_box.png", "mask_points.png", "overlay.png", "results.json"]


def _demo_command(out: Path) -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    recipe = re.search(r"^demo: install\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert recipe is not None
    line = next(cmd for cmd in recipe.group(1).splitlines() if "segmentor-cli" in cmd)
    line = line.replace("$(VENV)/bin/segmentor-cli", "SEGMENTOR_CLI").replace("$(DEMO_OUT)", str(out))
    words = shlex.split(line.replace("$(DEMO_ARGS)", ""))
    return [sys.executable, "-m", "perceptra_seg.cli", *words[1:]]


def _run(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTOR_")}
    return subprocess.run(
        _demo_command(out),
        cwd=ROOT,
        env={**clean, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_make_demo_runs_offline_with_the_packaged_model(tmp_path: Path) -> None:
    out = tmp_path / "out" / "demo"  # created by the command
    run = _run(out)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    report = json.loads((out / "results.json").read_text())
    assert report["model"]["model"] == "demo"
    scene = sample_scene()
    box_mask = np.asarray(Image.open(out / "mask_box.png")) > 0
    assert box_mask.shape == scene.size and int(box_mask.sum()) == report["box"]["area"]
    assert mask_iou(box_mask, scene.objects[2].mask) >= 0.7  # the boxed object, segmented
    assert "SEGMENTOR_MODEL_CHECKPOINT_PATH" in run.stdout  # how to switch to real weights
    assert str((out / "overlay.png").resolve()) in run.stdout


def test_make_demo_uses_a_configured_real_checkpoint(tmp_path: Path) -> None:
    checkpoint = save_meta_checkpoint(
        build_reference_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", seed=5), tmp_path / "sam2.1_hiera_tiny.pt", sam2=True
    )
    out = tmp_path / "demo"
    run = _run(out, SEGMENTOR_MODEL_CHECKPOINT_PATH=str(checkpoint), SEGMENTOR_MODEL_VARIANT="hiera_tiny")
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "results.json").read_text())
    assert (report["model"]["model"], report["model"]["variant"]) == ("sam_v2", "hiera_tiny")
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    assert "offline demo model" not in run.stdout


def test_make_demo_never_swaps_a_configured_model_for_the_demo(tmp_path: Path) -> None:
    # A variant chosen without a checkpoint means "Meta's file from the cache": offline and absent, it must fail
    # with the loader's message, not quietly segment with the packaged demo model.
    cache = tmp_path / "cache"
    run = _run(tmp_path / "demo", SEGMENTOR_MODEL_VARIANT="hiera_tiny", SEGMENTOR_MODEL_CACHE_DIR=str(cache))
    assert run.returncode != 0
    assert "no cached checkpoint for sam_v2/hiera_tiny" in run.stdout + run.stderr
    assert str(cache / "sam2.1_hiera_tiny.pt") in run.stdout + run.stderr
    assert not (tmp_path / "demo" / "results.json").exists()


def test_make_demo_with_the_defaults_spelled_out_still_runs_the_packaged_model(tmp_path: Path) -> None:
    # The repository's config.yaml (the one the Docker images point SEGMENTOR_CONFIG at) lists every default,
    # model name included: that chooses no model, so the demo stays offline.
    run = _run(tmp_path / "demo", SEGMENTOR_CONFIG=str(ROOT / "config.yaml"), SEGMENTOR_MODEL_NAME="sam_v2")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "demo" / "results.json").read_text())["model"]["model"] == "demo"
