"""The README's main-job command (`make demo`), run exactly as the Makefile writes it, offline with a local file."""

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

from ..conftest import build_reference_sam2, save_meta_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _demo_command(out: Path) -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    recipe = re.search(r"^demo: install\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert recipe is not None
    line = next(cmd for cmd in recipe.group(1).splitlines() if "segmentor-cli" in cmd)
    line = line.replace("$(VENV)/bin/segmentor-cli", "SEGMENTOR_CLI").replace("$(DEMO_OUT)", str(out))
    words = shlex.split(line.split(">")[0])
    return [sys.executable, "-m", "perceptra_seg.cli", *words[1:]]


def test_make_demo_command_writes_mask_overlay_and_json(tmp_path: Path) -> None:
    checkpoint = save_meta_checkpoint(
        build_reference_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", seed=5), tmp_path / "sam2.1_hiera_tiny.pt", sam2=True
    )
    out = tmp_path / "demo"
    out.mkdir()
    env = {**os.environ, "SEGMENTOR_MODEL_CHECKPOINT_PATH": str(checkpoint), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(_demo_command(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["model"]["variant"] == "hiera_tiny" and len(report["results"]) == 1
    mask = np.asarray(Image.open(out / "mask.png")) > 0
    assert mask.shape == (400, 600) and int(mask.sum()) == report["results"][0]["area"]
    assert Image.open(out / "overlay.png").size == (600, 400)
