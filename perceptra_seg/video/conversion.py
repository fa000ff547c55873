"""Convert the video-tracking part of Meta's SAM 2 / 2.1 checkpoints into transformers' ``Sam2VideoModel`` names.

Meta's ``sam2*_hiera_*.pt`` files hold the whole ``SAM2Base`` module. The image path
(:func:`perceptra_seg.conversion.convert_state_dict`) keeps only the image encoder, prompt encoder and mask decoder;
this module adds the memory modules that tracking needs: ``memory_attention.*``, ``memory_encoder.*``,
``maskmem_tpos_enc``, ``no_mem_pos_enc``, ``no_obj_ptr``, ``obj_ptr_proj.*``, ``mask_downsample.*`` and, in SAM 2.1
files only, ``no_obj_embed_spatial`` and ``obj_ptr_tpos_proj.*``. The caller loads the result with ``strict=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..conversion import convert_state_dict

__all__ = ["convert_video_state_dict", "video_config_flags"]

# Meta name → transformers name for the memory modules, applied in order (regex, replacement).
_MEMORY_RULES: tuple[tuple[str, str], ...] = (
    (r"^memory_attention\.norm\.", "memory_attention.layer_norm."),
    (r"^(memory_attention\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"^(memory_attention\.layers\.\d+\.(?:self_attn|cross_attn_image))\.out_proj\.", r"\1.o_proj."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.out_proj\.", "memory_encoder.projection."),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.dwconv\.", r"memory_encoder.memory_fuser.layers.\1.depthwise_conv."),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.norm\.", r"memory_encoder.memory_fuser.layers.\1.layer_norm."),
    (
        r"^memory_encoder\.fuser\.layers\.(\d+)\.pwconv(\d)\.",
        r"memory_encoder.memory_fuser.layers.\1.pointwise_conv\2.",
    ),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.gamma$", r"memory_encoder.memory_fuser.layers.\1.scale"),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
)
# Meta's mask downsampler is one Sequential of (conv, LayerNorm, GELU) × n followed by a 1×1 conv; transformers
# numbers the (conv, norm) pairs as layers and calls the last conv final_conv.
_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(weight|bias)$")
_OBJ_PTR_MLP = re.compile(r"^obj_ptr_proj\.layers\.(\d+)\.(weight|bias)$")


def video_config_flags(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``Sam2VideoConfig`` switches that differ between SAM 2.0 and SAM 2.1 files, read from the keys present.

    SAM 2.1 adds a learnt "object absent" embedding to spatial memories (``no_obj_embed_spatial``) and a projected
    temporal encoding of object pointers (``obj_ptr_tpos_proj``); SAM 2.0 files have neither.
    """
    return {
        "enable_occlusion_spatial_embedding": "no_obj_embed_spatial" in state_dict,
        "enable_temporal_pos_encoding_for_object_pointers": any(k.startswith("obj_ptr_tpos_proj.") for k in state_dict),
    }


def _downsampler_key(index: int, param: str, last: int) -> str:
    if index == last:
        return f"memory_encoder.mask_downsampler.final_conv.{param}"
    layer, position = divmod(index, 3)  # (conv, LayerNorm, GELU) per layer
    part = {0: "conv", 1: "layer_norm"}.get(position)
    if part is None:
        raise ValueError(f"unexpected mask-downsampler parameter at index {index}")
    return f"memory_encoder.mask_downsampler.layers.{layer}.{part}.{param}"


def convert_video_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a whole Meta SAM 2 / 2.1 state dict onto ``Sam2VideoModel`` parameter names (tensors shared, not copied).

    Raises:
        ValueError: the file has no memory modules (an image-only export), or a key has an unexpected layout.
    """
    if not any(k.startswith("memory_attention.") for k in state_dict):
        raise ValueError("the checkpoint has no memory_attention.* weights (an image-only SAM 2 export?)")
    converted = convert_state_dict(state_dict, "sam2")
    downsampler = [int(m[1]) for k in state_dict if (m := _DOWNSAMPLER.match(k))]
    last_conv = max(downsampler) if downsampler else -1
    pointer_depth = 1 + max((int(m[1]) for k in state_dict if (m := _OBJ_PTR_MLP.match(k))), default=-1)
    image_keys = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
    for key, value in state_dict.items():
        if key.startswith(image_keys):
            continue
        if match := _DOWNSAMPLER.match(key):
            converted[_downsampler_key(int(match[1]), match[2], last_conv)] = value
            continue
        if match := _OBJ_PTR_MLP.match(key):
            index = int(match[1])
            part = "proj_in" if index == 0 else "proj_out" if index == pointer_depth - 1 else f"layers.{index - 1}"
            converted[f"object_pointer_proj.{part}.{match[2]}"] = value
            continue
        name = key
        for pattern, replacement in _MEMORY_RULES:
            name = re.sub(pattern, replacement, name)
        converted[name] = value
    return converted
