"""EdgeTAM's catalogue entry, model construction and conversion guards (no checkpoint file needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from perceptra_seg.backends.edgetam import build_edgetam
from perceptra_seg.backends.repvit import RepViTBackbone
from perceptra_seg.conversion import detect_architecture, detect_family
from perceptra_seg.conversion_edgetam import EDGETAM_MARKER, convert_edgetam_state_dict
from perceptra_seg.exceptions import ConfigError
from perceptra_seg.registry import architecture_config, get_model_spec
from perceptra_seg.weights import verify_checkpoint_file

SMALL = {"repvit": {"embed_dims": [8, 16, 24, 32], "depths": [1, 1, 2, 1]}}


def test_catalogue_entry() -> None:
    spec = get_model_spec("edgetam")
    assert (spec.variant, spec.family, spec.architecture, spec.filename) == (
        "repvit_m1",
        "sam2",
        "edgetam",
        "edgetam.pt",
    )
    assert spec.url == "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt"
    assert spec.licence == "Apache-2.0" and spec.sha256_prefix is None and spec.precision_key == "edgetam/repvit_m1"
    assert architecture_config("sam2", "repvit_m1", "edgetam") == {"repvit": {}}
    with pytest.raises(ConfigError, match="unknown variant 'vit_b' for model 'edgetam'"):
        get_model_spec("edgetam", "vit_b")


def test_built_model_has_our_trunk_and_a_truthful_config() -> None:
    model = build_edgetam(SMALL)
    assert isinstance(model.vision_encoder.backbone, RepViTBackbone)
    vision = model.config.vision_config
    assert vision.backbone_channel_list == [32, 24, 16, 8]
    assert vision.backbone_config.architecture == "repvit_m1"
    assert vision.backbone_config.model_args["depth"] == [1, 1, 2, 1]
    with torch.inference_mode():
        features = model.get_image_embeddings(torch.zeros(1, 3, 1024, 1024))
    assert [tuple(f.shape) for f in features] == [(1, 32, 256, 256), (1, 64, 128, 128), (1, 256, 64, 64)]


@pytest.mark.parametrize(
    ("repvit", "message"),
    [({"depth": [1, 1, 1, 1]}, "unexpected keyword argument 'depth'"), ({"depths": [1]}, "same")],
)
def test_bad_trunk_settings_are_config_errors(repvit: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_edgetam({"repvit": repvit})


def test_detection_and_conversion_guard() -> None:
    state = {EDGETAM_MARKER: torch.zeros(1), "sam_mask_decoder.iou_token.weight": torch.zeros(1)}
    assert detect_family(state) == "sam2" and detect_architecture(state) == "edgetam"
    with pytest.raises(ValueError, match="not an EdgeTAM checkpoint"):
        convert_edgetam_state_dict({"sam_mask_decoder.iou_token.weight": torch.zeros(1)})


def test_download_check_accepts_an_edgetam_file_only_as_edgetam(small_edgetam: tuple[Path, Any, Any]) -> None:
    """What a download (or a cached file) must pass before it is used: a complete EdgeTAM checkpoint."""
    path = small_edgetam[0]
    assert verify_checkpoint_file(path, family="sam2", full=True, architecture="edgetam") is None
    assert verify_checkpoint_file(path, family="sam2", architecture="sam") == (
        "holds a EdgeTAM model, expected plain SAM"
    )
