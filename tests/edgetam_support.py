"""Random-weight EdgeTAM checkpoints in the authors' format (``edgetam.pt``: ``{"model": state_dict}``).

No package on the index holds the authors' EdgeTAM code, so the file is made the other way round: build
transformers' ``EdgeTamVideoModel`` (every module of the authors' ``SAM2Base``; our RepViT as its trunk, whose
names equal timm's), give it random weights, and rename each parameter to the authors' name with
:func:`authors_layout`. Those names follow the authors' modules (``sam2/modeling/*.py`` and ``edgetam.yaml`` in
facebookresearch/EdgeTAM); the parity tests check the renaming against transformers' own conversion script
(``replace_keys(authors_layout(state)) == state``), so a wrong authors' name cannot go unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from perceptra_seg.backends.edgetam import build_edgetam

# transformers name → authors' name, applied in order (regex, replacement).
_RULES: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.backbone\.timm_model\.", "image_encoder.trunk.body."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (
        r"^prompt_encoder\.shared_embedding\.positional_embedding$",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    (r"^(mask_decoder\.transformer.*)\.o_proj\.", r"\1.out_proj."),
    (r"^(mask_decoder\.transformer.*)\.layer_norm(\d+|_final_attn)\.", r"\1.norm\2."),
    (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\.proj_in\.", r"\1.layers.0."),
    (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\.proj_out\.", r"\1.layers.1."),
    # hidden layer first, so that a renamed proj_in (layers.0) is not taken for it
    (r"^(.*(?:iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head))\.layers\.0\.", r"\1.layers.1."),
    (r"^(.*(?:iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head))\.proj_in\.", r"\1.layers.0."),
    (r"^(.*(?:iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head))\.proj_out\.", r"\1.layers.2."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"^object_pointer_proj\.proj_in\.", "obj_ptr_proj.layers.0."),
    (r"^object_pointer_proj\.layers\.0\.", "obj_ptr_proj.layers.1."),
    (r"^object_pointer_proj\.proj_out\.", "obj_ptr_proj.layers.2."),
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"^(memory_attention\.layers\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^(memory_attention\.layers\.\d+\.\w+)\.o_proj\.", r"\1.out_proj."),
    (r"^(memory_attention\.layers\.\d+)\.mlp\.up_proj\.", r"\1.linear1."),
    (r"^(memory_attention\.layers\.\d+)\.mlp\.down_proj\.", r"\1.linear2."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.depthwise_conv\.", r"memory_encoder.fuser.layers.\1.dwconv."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.layer_norm\.", r"memory_encoder.fuser.layers.\1.norm."),
    (
        r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.pointwise_conv(\d)\.",
        r"memory_encoder.fuser.layers.\1.pwconv\2.",
    ),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.scale$", r"memory_encoder.fuser.layers.\1.gamma"),
    (r"^spatial_perceiver\.latents_1d$", "spatial_perceiver.latents"),
    (r"^spatial_perceiver\.layer_norm\.", "spatial_perceiver.norm."),
    (r"^(spatial_perceiver\.layers\.\d+)\.layer_norm_input\.", r"\1.attn.norm_x."),
    (r"^(spatial_perceiver\.layers\.\d+)\.layer_norm_latents\.", r"\1.attn.norm_latents."),
    (r"^(spatial_perceiver\.layers\.\d+)\.layer_norm_self\.", r"\1.self_attn.norm."),
    (r"^(spatial_perceiver\.layers\.\d+)\.cross_attention\.q_proj\.", r"\1.attn.to_q."),
    (r"^(spatial_perceiver\.layers\.\d+)\.cross_attention\.o_proj\.", r"\1.attn.to_out."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_attention\.q_proj\.", r"\1.self_attn.to_q."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_attention\.o_proj\.", r"\1.self_attn.to_out."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.layer_norm\.", r"\1.ff.0."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.up_proj\.", r"\1.ff.1."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.down_proj\.", r"\1.ff.3."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_mlp\.layer_norm\.", r"\1.self_ff.0."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_mlp\.up_proj\.", r"\1.self_ff.1."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_mlp\.down_proj\.", r"\1.self_ff.3."),
)
_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.(?:layers\.(\d+)\.(conv|layer_norm)|final_conv)\.(\w+)$")
_KV = re.compile(r"^(spatial_perceiver\.layers\.\d+)\.(cross_attention|self_attention)\.k_proj\.(\w+)$")


def authors_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``EdgeTamVideoModel`` state dict to the authors' ``SAM2Base`` names (a new dict of clones).

    Folded back on the way: the two copies of the prompt encoder's Gaussian matrix into one, the 4-row point
    embedding into ``point_embeddings.{0..3}``, the perceiver's ``k_proj`` / ``v_proj`` into one ``to_kv``.
    """
    layers = 1 + max(int(m[1]) for k in state if (m := _DOWNSAMPLER.match(k)) and m[1] is not None)
    authors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.detach().clone().contiguous()
        if key.startswith("shared_image_embedding."):
            continue
        if key == "prompt_encoder.point_embed.weight":
            for row in range(value.shape[0]):
                authors[f"sam_prompt_encoder.point_embeddings.{row}.weight"] = value[row : row + 1].clone()
            continue
        if match := _DOWNSAMPLER.match(key):
            index = 3 * layers if match[1] is None else 3 * int(match[1]) + (0 if match[2] == "conv" else 1)
            authors[f"memory_encoder.mask_downsampler.encoder.{index}.{match[3]}"] = value
            continue
        if match := _KV.match(key):
            module = "attn" if match[2] == "cross_attention" else "self_attn"
            fused = torch.cat([value, state[key.replace(".k_proj.", ".v_proj.")].detach()], dim=0)
            authors[f"{match[1]}.{module}.to_kv.{match[3]}"] = fused
            continue
        if re.match(r"^spatial_perceiver\.layers\.\d+\.(cross|self)_attention\.v_proj\.", key):
            continue
        for pattern, replacement in _RULES:
            key = re.sub(pattern, replacement, key)
        authors[key] = value
    return authors


# EdgeTAM's video settings that differ from EdgeTamVideoConfig's defaults (edgetam.yaml: no temporal encoding of
# object pointers, no learnt "object absent" spatial embedding); transformers' conversion script sets the same.
VIDEO_FLAGS: dict[str, Any] = {
    "enable_temporal_pos_encoding_for_object_pointers": False,
    "enable_occlusion_spatial_embedding": False,
}


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Give every floating parameter and buffer random values, in place: matrices and kernels normal with variance
    1 / fan-in (so activations neither vanish nor saturate and masks stay partial), norm scales near 1, biases and
    other vectors small, batch-norm variances positive. The two copies of the positional-encoding matrix stay
    equal, as in any real checkpoint."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.dtype.is_floating_point:
                continue
            values = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                values = 1.0 + 0.1 * values.abs()
            elif tensor.ndim >= 2:
                values = values / max(1, tensor[0].numel()) ** 0.5
            elif name.endswith("weight"):
                values = 1.0 + 0.1 * values
            else:
                values = 0.1 * values
            tensor.copy_(values)
        shared: Any = model
        shared.shared_image_embedding.positional_embedding.copy_(
            shared.prompt_encoder.shared_embedding.positional_embedding
        )
        # objects judged present (a positive object-score logit), else every tracked mask would be empty
        shared.mask_decoder.pred_obj_score_head.proj_out.bias.add_(3.0)


def write_edgetam_checkpoint(path: Path, architecture: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Save a random-weight EdgeTAM file at ``path`` in the authors' format; returns the transformers-named video
    state dict it was made from (``authors_layout`` of it is what the file holds)."""
    model = build_edgetam({**VIDEO_FLAGS, **architecture}, video=True)
    randomise(model, seed)
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    torch.save({"model": authors_layout(state)}, path)
    return state
