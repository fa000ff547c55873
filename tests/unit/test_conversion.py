"""Every released architecture converts key-for-key and shape-for-shape (built on the meta device: no memory)."""

from __future__ import annotations

import pytest
import torch

from perceptra_seg.conversion import convert_state_dict, detect_family, unwrap_checkpoint
from perceptra_seg.registry import architecture_config, get_model_spec, list_models

from ..conftest import sam2_build, segment_anything

SAM2_CONFIGS = {
    ("sam_v2", "hiera_tiny"): "configs/sam2.1/sam2.1_hiera_t.yaml",
    ("sam_v2", "hiera_small"): "configs/sam2.1/sam2.1_hiera_s.yaml",
    ("sam_v2", "hiera_base_plus"): "configs/sam2.1/sam2.1_hiera_b+.yaml",
    ("sam_v2", "hiera_large"): "configs/sam2.1/sam2.1_hiera_l.yaml",
    ("sam_v2.0", "hiera_tiny"): "configs/sam2/sam2_hiera_t.yaml",
    ("sam_v2.0", "hiera_small"): "configs/sam2/sam2_hiera_s.yaml",
    ("sam_v2.0", "hiera_base_plus"): "configs/sam2/sam2_hiera_b+.yaml",
    ("sam_v2.0", "hiera_large"): "configs/sam2/sam2_hiera_l.yaml",
}


def _reference_state_dict(name: str, variant: str) -> dict[str, torch.Tensor]:
    if name == "sam_v1":
        with torch.device("meta"):
            return segment_anything.sam_model_registry[variant]().state_dict()
    # Hiera calls .item() while building, which the meta device cannot do: build SAM 2 on the CPU.
    return sam2_build.build_sam2(SAM2_CONFIGS[(name, variant)], None, device="cpu").state_dict()


def _ours(family: str, variant: str) -> dict[str, torch.Tensor]:
    from transformers import Sam2Config, Sam2Model, SamConfig, SamModel

    with torch.device("meta"):
        config = architecture_config(family, variant)  # type: ignore[arg-type]
        model = SamModel(SamConfig(**config)) if family == "sam1" else Sam2Model(Sam2Config(**config))
    return model.state_dict()


# SAM 2.0 and 2.1 files share the image-path architecture; one 2.0 variant proves the 2.0 key set.
CASES = [(s.name, s.variant) for s in list_models() if s.name in ("sam_v1", "sam_v2")] + [("sam_v2.0", "hiera_tiny")]


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_every_catalogue_architecture_converts_exactly(name: str, variant: str) -> None:
    spec = get_model_spec(name, variant)
    reference = _reference_state_dict(name, variant)
    assert detect_family(reference) == spec.family
    converted = convert_state_dict(reference, spec.family)
    expected = _ours(spec.family, variant)
    assert set(converted) == set(expected)
    mismatched = {k for k in expected if converted[k].shape != expected[k].shape}
    assert not mismatched


def test_unwrap_accepts_both_layouts_and_rejects_others() -> None:
    state = {"a.weight": torch.zeros(1)}
    assert unwrap_checkpoint(state) == state
    assert unwrap_checkpoint({"model": state}) == state
    with pytest.raises(ValueError, match="state dict"):
        unwrap_checkpoint([1, 2])
    with pytest.raises(ValueError, match="named tensor"):
        unwrap_checkpoint({"a": 3})


def test_detect_family_rejects_foreign_state_dicts() -> None:
    with pytest.raises(ValueError, match="not a Meta SAM checkpoint"):
        detect_family({"vision_encoder.layers.0.weight": torch.zeros(1)})
