"""The packaged demo: catalogue entry, offline checkpoint resolution, file layout, sample image and the demo command."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from perceptra_seg.conversion import convert_state_dict, detect_family, sam1_to_meta
from perceptra_seg.demo import run as demo_run
from perceptra_seg.demo.evaluation import mask_iou
from perceptra_seg.demo.scenes import sample_scene
from perceptra_seg.registry import DEFAULT_VARIANTS, MODEL_NAMES, architecture_config, get_model_spec
from perceptra_seg.utils.image_io import load_image
from perceptra_seg.utils.masks import png_to_mask
from perceptra_seg.weights import packaged_checkpoint, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _training_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_demo_model", ROOT / "tools" / "train_demo_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_demo_model", module)
    spec.loader.exec_module(module)
    return module


def test_demo_is_in_the_catalogue_but_not_the_default() -> None:
    spec = get_model_spec("demo")
    assert (spec.name, spec.variant, spec.family, spec.packaged) == ("demo", "tiny", "sam1", True)
    assert "demo" in MODEL_NAMES and DEFAULT_VARIANTS["demo"] == "tiny"
    from perceptra_seg.config import ModelConfig

    assert ModelConfig().name == "sam_v2"
    assert ModelConfig(name="demo").name == "demo"


def test_packaged_checkpoint_resolves_offline_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the demo checkpoint must never be downloaded")

    monkeypatch.setattr("perceptra_seg.weights.download_checkpoint", no_download)
    source = resolve_checkpoint(get_model_spec("demo"), None, cache_dir=tmp_path, offline=True)
    assert source.kind == "meta"
    assert Path(source.location) == packaged_checkpoint(get_model_spec("demo"))
    assert Path(source.location).parent.name == "assets"
    assert not any(tmp_path.iterdir())  # nothing written to the download cache


def test_checkpoint_is_small_and_in_meta_layout() -> None:
    path = packaged_checkpoint(get_model_spec("demo"))
    assert path.stat().st_size < 5 * 2**20
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert detect_family(state) == "sam1"
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in state
    top_level = {k.split(".")[0] for k in state}
    assert top_level == {"image_encoder", "prompt_encoder", "mask_decoder", "pixel_mean", "pixel_std"}
    from transformers import SamConfig, SamModel

    with torch.device("meta"):
        expected = SamModel(SamConfig(**architecture_config("sam1", "tiny"))).state_dict()
    converted = convert_state_dict(state, "sam1")
    assert set(converted) == set(expected)
    assert all(converted[k].shape == expected[k].shape for k in expected)


def test_meta_export_inverts_the_conversion_exactly() -> None:
    """Meta layout → transformers (``convert_state_dict``) → Meta layout (``sam1_to_meta``, the training tool's
    export) is the identity."""
    state = torch.load(packaged_checkpoint(get_model_spec("demo")), map_location="cpu", weights_only=True)
    again = sam1_to_meta(convert_state_dict(state, "sam1"))
    assert set(again) == set(state)
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_training_tool_logit_path_equals_inference() -> None:
    """The tool's matrix form of the logit upsampling gives inference's masks, for square and odd sizes."""
    from perceptra_seg.preprocessing import logits_to_mask, resized_input_size

    tool = _training_tool()
    rng = np.random.default_rng(0)
    for size, side in [((256, 256), 256), ((201, 333), 128), ((333, 201), 128), ((90, 1000), 256)]:
        low_res = rng.normal(0.0, 3.0, (side, side)).astype(np.float32)
        input_size = resized_input_size(size, "sam1")
        ours = tool.to_image_frame(torch.from_numpy(low_res)[None], input_size, size)[0].numpy()
        np.testing.assert_array_equal(ours > 0, logits_to_mask(low_res, size, input_size, "sam1"))


def test_sample_image_is_the_generated_scene() -> None:
    shipped = load_image(demo_run.sample_image_path())
    np.testing.assert_array_equal(shipped, sample_scene().image)


def test_demo_run_writes_masks_overlay_and_json(tmp_path: Path, demo_segmentor: Any) -> None:
    summary = demo_run.run_demo(tmp_path, segmentor=demo_segmentor)
    scene = sample_scene()
    box_mask = png_to_mask((tmp_path / "mask_box.png").read_bytes())
    points_mask = png_to_mask((tmp_path / "mask_points.png").read_bytes())
    # The box surrounds the teal rectangle, the click picks the blue one (shipped model: IoU 0.796 and 0.864).
    assert mask_iou(box_mask, scene.objects[2].mask) >= 0.76
    assert mask_iou(points_mask, scene.objects[0].mask) >= 0.82
    assert mask_iou(box_mask, scene.objects[0].mask) == 0.0
    assert json.loads((tmp_path / "results.json").read_text()) == summary
    assert summary["box"]["area"] == int(box_mask.sum())
    assert summary["points"]["prompt"]["points"] == [list(p) for p in demo_run.SAMPLE_POINTS]
    assert summary["model"]["model"] == "demo"
    overlay = load_image((tmp_path / "overlay.png").read_bytes())
    assert overlay.shape == scene.image.shape
    assert not np.array_equal(overlay, scene.image)


def test_data_parallel_training_is_deterministic() -> None:
    """Two workers averaging gradients: the workers agree (the tool checks it), and a rerun gives the same tensors."""
    tool = _training_tool()
    args = tool.build_parser().parse_args(["--steps", "2", "--blind-steps", "1", "--workers", "2", "--log-every", "3"])
    first = tool.train(args).state_dict()
    second = tool.train(args).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    untrained = tool.new_model(args.seed).state_dict()
    changed = {k.split(".")[0] for k in first if not torch.equal(first[k], untrained[k])}
    assert {"vision_encoder", "mask_decoder", "prompt_encoder"} <= changed


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--workers", "0"], "--workers"),
        (["--log-every", "0"], "--log-every"),
        (["--max-prompts", "0"], "--max-prompts"),
        (["--eval-scenes", "0"], "--eval-scenes"),
        (["--balance-until", "0"], "--balance-until"),
        (["--lr", "nan"], "--lr"),
        (["--blind-steps", "-1"], "--blind-steps"),
        (["--min-side", "300", "--max-side", "200"], "--min-side"),
    ],
)
def test_training_tool_rejects_bad_flags_before_training(
    flags: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _training_tool().main([*flags, "--out", str(tmp_path / "m.pth"), "--sample", str(tmp_path / "s.png")])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
