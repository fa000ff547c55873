"""Convert the authors' EdgeTAM checkpoint (``edgetam.pt``) into transformers' ``EdgeTamModel`` /
``EdgeTamVideoModel`` names.

``edgetam.pt`` holds ``{"model": state_dict}`` of the authors' ``SAM2Base`` (their SAM 2 fork). It differs from a
SAM 2.1 file in three places; everything else (neck, prompt encoder, mask decoder, memory encoder, object-pointer
projection) is named as in SAM 2 and gets SAM 2's renames (:mod:`perceptra_seg.conversion`,
:mod:`perceptra_seg.video.conversion`):

* the trunk is timm's RepViT under ``image_encoder.trunk.body.``; our
  :class:`~perceptra_seg.backends.repvit.RepViT` uses timm's names, so the keys only move to
  ``vision_encoder.backbone.timm_model.``;
* the memory attention's feed-forward layers are ``linear1`` / ``linear2`` (transformers: ``mlp.up_proj`` /
  ``mlp.down_proj``);
* the spatial perceiver (``spatial_perceiver.*``, video only) compresses each memory to 256 + 256 latents; its
  attention layers keep keys and values in one ``to_kv`` matrix, which transformers splits into ``k_proj`` and
  ``v_proj`` (first half keys, second half values).

The caller loads the result with ``strict=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .conversion import convert_state_dict

__all__ = ["EDGETAM_MARKER", "convert_edgetam_state_dict"]

#: A key only EdgeTAM files hold: the first convolution of the RepViT stem.
EDGETAM_MARKER = "image_encoder.trunk.body.stem.conv1.c.weight"

_TRUNK = "image_encoder.trunk.body."
_PERCEIVER = "spatial_perceiver."
_IMAGE_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")

# The perceiver's parts: (authors' module, transformers' module) inside ``spatial_perceiver.layers.N``.
_PERCEIVER_PARTS: tuple[tuple[str, str], ...] = (
    ("attn.norm_x", "layer_norm_input"),
    ("attn.norm_latents", "layer_norm_latents"),
    ("attn.to_q", "cross_attention.q_proj"),
    ("attn.to_out", "cross_attention.o_proj"),
    ("self_attn.norm", "layer_norm_self"),
    ("self_attn.to_q", "self_attention.q_proj"),
    ("self_attn.to_out", "self_attention.o_proj"),
    ("ff.0", "mlp.layer_norm"),
    ("ff.1", "mlp.up_proj"),
    ("ff.3", "mlp.down_proj"),
    ("self_ff.0", "self_mlp.layer_norm"),
    ("self_ff.1", "self_mlp.up_proj"),
    ("self_ff.3", "self_mlp.down_proj"),
)
_PERCEIVER_KV = {"attn.to_kv": "cross_attention", "self_attn.to_kv": "self_attention"}
_PERCEIVER_LAYER = re.compile(r"^spatial_perceiver\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_MEMORY_MLP = re.compile(r"^(memory_attention\.layers\.\d+)\.linear([12])\.")


def _perceiver(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One authors' perceiver entry as transformers' entries (two for a fused key/value matrix)."""
    top = {"spatial_perceiver.latents": "latents_1d", "spatial_perceiver.latents_2d": "latents_2d"}
    if key in top:
        return {f"spatial_perceiver.{top[key]}": value}
    if key.startswith("spatial_perceiver.norm."):
        return {"spatial_perceiver.layer_norm." + key.rsplit(".", 1)[1]: value}
    match = _PERCEIVER_LAYER.match(key)
    if match is None:
        raise ValueError(f"unexpected spatial-perceiver parameter {key!r}")
    layer, module, param = match.groups()
    prefix = f"spatial_perceiver.layers.{layer}."
    if module in _PERCEIVER_KV:
        keys, values = torch.chunk(value, 2, dim=0)
        target = prefix + _PERCEIVER_KV[module]
        return {f"{target}.k_proj.{param}": keys, f"{target}.v_proj.{param}": values}
    parts = dict(_PERCEIVER_PARTS)
    if module not in parts:
        raise ValueError(f"unexpected spatial-perceiver parameter {key!r}")
    return {f"{prefix}{parts[module]}.{param}": value}


def convert_edgetam_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, video: bool = False
) -> dict[str, torch.Tensor]:
    """Map the authors' EdgeTAM state dict onto ``EdgeTamModel`` (``video=False``: the image path only, memory
    modules dropped) or ``EdgeTamVideoModel`` (``video=True``: every key) parameter names.

    Tensors are shared, not copied, except the perceiver's split key/value matrices (views of the fused one).

    Raises:
        ValueError: not an EdgeTAM file (no RepViT trunk), or a perceiver key of an unknown layout.
    """
    if EDGETAM_MARKER not in state_dict:
        raise ValueError(f"not an EdgeTAM checkpoint: no {EDGETAM_MARKER!r}")
    trunk = {
        "vision_encoder.backbone.timm_model." + key[len(_TRUNK) :]: value
        for key, value in state_dict.items()
        if key.startswith(_TRUNK)
    }
    rest = {key: value for key, value in state_dict.items() if not key.startswith((_TRUNK, _PERCEIVER))}
    if not video:
        image = {key: value for key, value in rest.items() if key.startswith(_IMAGE_PREFIXES)}
        return {**convert_state_dict(image, "sam2"), **trunk}
    from .video.conversion import convert_video_state_dict

    converted: dict[str, torch.Tensor] = {}
    for key, value in convert_video_state_dict(rest).items():
        converted[_MEMORY_MLP.sub(lambda m: f"{m[1]}.mlp.{'up' if m[2] == '1' else 'down'}_proj.", key)] = value
    for key, value in state_dict.items():
        if key.startswith(_PERCEIVER):
            converted.update(_perceiver(key, value))
    return {**converted, **trunk}
