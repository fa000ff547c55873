"""Deployment paths: export on first use into the cache, and the ``[onnx]`` install without torch."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceptra_seg import Segmentor
from perceptra_seg.backends.onnx_manifest import MANIFEST_NAME, default_onnx_dir, read_manifest
from perceptra_seg.weights import file_fingerprint

from .conftest import Exported

REPO = Path(__file__).resolve().parents[2]


def test_missing_export_is_created_in_the_cache_on_first_use(
    sam1_export: Exported, tmp_path: Path, caplog: pytest.LogCaptureFixture, photos: dict[str, np.ndarray]
) -> None:
    checkpoint = Path(sam1_export.config["model"]["checkpoint_path"])
    config = {
        "model": {**sam1_export.config["model"], "cache_dir": str(tmp_path)},
        "runtime": {"backend": "onnx", "device": "cpu"},
    }
    expected_dir = default_onnx_dir(tmp_path, "sam_v1", "vit_b", "fp32", file_fingerprint(checkpoint))
    assert expected_dir == tmp_path / "onnx" / f"sam_v1-vit_b-fp32-{file_fingerprint(checkpoint)}"
    with caplog.at_level(logging.INFO):
        first = Segmentor(config)
    assert any("exporting it now" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert (expected_dir / MANIFEST_NAME).is_file() and first.backend.directory == expected_dir  # type: ignore[attr-defined]
    assert read_manifest(expected_dir).checkpoint == file_fingerprint(checkpoint)
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]  # no staging folders left behind
    stamp = (expected_dir / "encoder.onnx").stat().st_mtime_ns

    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = Segmentor(config)
    assert not any("exporting" in r.getMessage() for r in caplog.records)
    assert (expected_dir / "encoder.onnx").stat().st_mtime_ns == stamp
    box = [(60, 40, 320, 260)]
    reference = sam1_export.onnx.segment(photos["coffee"], boxes=box)[0]
    assert np.array_equal(second.segment(photos["coffee"], boxes=box)[0].mask, reference.mask)


_NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    for name in ("torch", "transformers", "torchvision", "onnx"):
        sys.modules[name] = None  # any import of these now raises ImportError
    import numpy as np
    from perceptra_seg import ModelLoadError, Segmentor

    args = json.loads(sys.argv[1])
    def config(model_dir):
        return {"model": {"name": "sam_v1", "variant": "vit_b", "checkpoint_path": args["checkpoint"]},
                "runtime": {"backend": "onnx", "device": "cpu"}, "onnx": {"model_dir": model_dir}}
    result = Segmentor(config(args["export"])).segment(args["image"], boxes=[args["box"]])[0]
    np.save(args["out"], result.mask)
    try:
        Segmentor(config(args["empty"]))
    except ModelLoadError as exc:
        print("ERROR:", exc)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "onnx") and sys.modules[m])
    print("LOADED:", json.dumps(heavy))
    """
)


def test_onnx_install_path_runs_without_torch(
    sam1_export: Exported, tmp_path: Path, photos: dict[str, np.ndarray]
) -> None:
    """torch, transformers and onnx made unimportable: the exported model still loads, segments and matches."""
    image = tmp_path / "chelsea.png"
    Image.fromarray(photos["chelsea"]).save(image)
    box = [80, 30, 380, 280]
    args = {
        "checkpoint": sam1_export.config["model"]["checkpoint_path"],
        "export": str(sam1_export.fp32_dir),
        "empty": str(tmp_path / "empty"),
        "image": str(image),
        "box": box,
        "out": str(tmp_path / "mask.npy"),
    }
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, json.dumps(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert json.loads(lines["LOADED"]) == []
    assert "exporting one needs torch, which is not installed" in lines["ERROR"]
    command = f"segmentor-cli export-onnx --model sam_v1 --variant vit_b --checkpoint {args['checkpoint']}"
    assert command in lines["ERROR"]
    expected = sam1_export.onnx.segment(photos["chelsea"], boxes=[box])[0].mask
    assert np.array_equal(np.load(tmp_path / "mask.npy"), expected)
