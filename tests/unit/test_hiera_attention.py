"""The image encoder's trimmed Hiera attention (``perceptra_seg.backends.hiera_attention``) changes no value."""

from __future__ import annotations

import torch

from perceptra_seg.backends.hiera_attention import trim_hiera_attention
from perceptra_seg.backends.torch_backend import build_model
from perceptra_seg.registry import architecture_config


def test_trimmed_attention_gives_bit_identical_features() -> None:
    from transformers.models.sam2.modeling_sam2 import Sam2MultiScaleAttention

    torch.manual_seed(0)
    model = build_model("sam2", architecture_config("sam2", "hiera_tiny")).eval()
    pixels = torch.randn(1, 3, 256, 256)  # a small input: the trunk resizes its position embedding to the grid
    with torch.inference_mode():
        expected = model.vision_encoder(pixels)
    blocks = [m for m in model.modules() if isinstance(m, Sam2MultiScaleAttention)]
    assert trim_hiera_attention(model) == len(blocks) == len(model.vision_encoder.backbone.blocks)
    assert trim_hiera_attention(model) == 0  # installing twice changes nothing
    with torch.inference_mode():
        actual = model.vision_encoder(pixels)
    assert torch.equal(actual.last_hidden_state, expected.last_hidden_state)
    for ours, theirs in zip(actual.fpn_hidden_states, expected.fpn_hidden_states, strict=True):
        assert torch.equal(ours, theirs)
    assert float(expected.last_hidden_state.abs().sum()) > 0.0
