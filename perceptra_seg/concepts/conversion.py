"""Convert Meta's SAM 3 checkpoint (``sam3.pt``) into the parameter names of transformers' ``Sam3Model``.

Meta's file holds ``{"model": state_dict}`` with the image (concept) model under ``detector.`` and the interactive /
video tracker under ``tracker.``. The concept model needs only the ``detector.`` part. Besides renames, three
structural steps: fused attention projections (``qkv`` / ``in_proj_*``, ``[3D, ...]``) split into ``q`` / ``k`` / ``v``
thirds, the ViT's pretraining position table loses its class-token row, and the text encoder's projection matrix is
stored ``[width, out]`` by Meta but ``[out, width]`` (a ``Linear`` weight) by transformers. The ViT's precomputed
rotary tables (``attn.freqs_cis``) are dropped: transformers computes them from the config. The caller loads the
result with ``strict=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["DETECTOR_PREFIX", "TRACKER_PREFIX", "convert_sam3_state_dict", "is_sam3_state_dict"]

DETECTOR_PREFIX = "detector."
TRACKER_PREFIX = "tracker."

_ENCODE = r"^geometry_encoder\.encode\.(\d+)\."
_ENC = r"^transformer\.encoder\.layers\.(\d+)\."
_DEC = r"^transformer\.decoder\."
_DEC_LAYER = r"^transformer\.decoder\.layers\.(\d+)\."
_TEXT = r"^backbone\.language_backbone\.encoder\."
_TEXT_LAYER = _TEXT + r"transformer\.resblocks\.(\d+)\."
_VIT = r"^backbone\.vision_backbone\.trunk\."
_NECK = r"^backbone\.vision_backbone\.convs\.(\d+)\."

# (pattern, replacement) applied in order to every detector key (after the ``detector.`` prefix is removed).
_RULES: tuple[tuple[str, str], ...] = (
    # ViT trunk
    (_VIT + r"pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (_VIT + r"patch_embed\.proj\.", "vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (_VIT + r"ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (_VIT + r"blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.layers.\1.layer_norm\2."),
    (_VIT + r"blocks\.(\d+)\.attn\.qkv\.", r"vision_encoder.backbone.layers.\1.attention.qkv."),
    (_VIT + r"blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (_VIT + r"blocks\.(\d+)\.mlp\.", r"vision_encoder.backbone.layers.\1.mlp."),
    # FPN neck: the up/down-sampling convolutions, then the two projections of each level
    (_NECK + r"dconv_2x2_0\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (_NECK + r"dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (_NECK + r"dconv_2x2\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (_NECK + r"conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (_NECK + r"conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    # text encoder (CLIP layout) and its resizer to the detector width
    (_TEXT + r"token_embedding\.", "text_encoder.text_model.embeddings.token_embedding."),
    (_TEXT + r"positional_embedding$", "text_encoder.text_model.embeddings.position_embedding.weight"),
    (_TEXT + r"ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (_TEXT + r"text_projection$", "text_encoder.text_projection.weight"),
    (_TEXT_LAYER + r"attn\.", r"text_encoder.text_model.encoder.layers.\1.self_attn."),
    (_TEXT_LAYER + r"ln_(\d)\.", r"text_encoder.text_model.encoder.layers.\1.layer_norm\2."),
    (_TEXT_LAYER + r"mlp\.c_fc\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc1."),
    (_TEXT_LAYER + r"mlp\.c_proj\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc2."),
    (r"^backbone\.language_backbone\.resizer\.", "text_projection."),
    # geometry (exemplar) encoder
    (_ENCODE + r"cross_attn_image\.", r"geometry_encoder.layers.\1.cross_attn."),
    (_ENCODE + r"linear(\d)\.", r"geometry_encoder.layers.\1.mlp.fc\2."),
    (_ENCODE + r"norm(\d)\.", r"geometry_encoder.layers.\1.layer_norm\2."),
    (_ENCODE + r"self_attn\.", r"geometry_encoder.layers.\1.self_attn."),
    (r"^geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"^geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"^geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    # DETR-style encoder
    (_ENC + r"cross_attn_image\.", r"detr_encoder.layers.\1.cross_attn."),
    (_ENC + r"(self_attn|cross_attn)\.", r"detr_encoder.layers.\1.\2."),
    (_ENC + r"linear(\d)\.", r"detr_encoder.layers.\1.mlp.fc\2."),
    (_ENC + r"norm(\d)\.", r"detr_encoder.layers.\1.layer_norm\2."),
    # DETR-style decoder
    (_DEC_LAYER + r"self_attn\.", r"detr_decoder.layers.\1.self_attn."),
    (_DEC_LAYER + r"ca_text\.", r"detr_decoder.layers.\1.text_cross_attn."),
    (_DEC_LAYER + r"cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn."),
    (_DEC_LAYER + r"linear(\d)\.", r"detr_decoder.layers.\1.mlp.fc\2."),
    (_DEC_LAYER + r"norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (_DEC_LAYER + r"catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (_DEC_LAYER + r"norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (_DEC_LAYER + r"norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (_DEC + r"presence_token_head\.", "detr_decoder.presence_head."),
    (_DEC + r"presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (_DEC + r"norm\.", "detr_decoder.output_layer_norm."),
    (_DEC + r"bbox_embed\.", "detr_decoder.box_head."),
    (_DEC + r"instance_bbox_embed\.", "detr_decoder.instance_box_head."),
    (_DEC + r"ref_point_head\.", "detr_decoder.ref_point_head."),
    (_DEC + r"boxRPB_embed_([xy])\.", r"detr_decoder.box_rpb_embed_\1."),
    (_DEC, "detr_decoder."),  # query_embed, reference_points, presence_token, instance_* embeddings
    # scoring head
    (r"^dot_prod_scoring\.prompt_mlp\.layers\.", "dot_product_scoring.text_mlp.layers."),
    (r"^dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"^dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"^dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    # mask head
    (r"^segmentation_head\.pixel_decoder\.", "mask_decoder.pixel_decoder."),
    (r"^segmentation_head\.(?:mask_predictor\.)?mask_embed\.", "mask_decoder.mask_embedder."),
    (r"^segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"^segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"^segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (r"^segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
    # attention output projections everywhere: PyTorch's ``out_proj`` → ``o_proj`` (the text encoder's CLIP keeps it)
    (r"^(?!text_encoder\.)(.*)\.out_proj\.", r"\1.o_proj."),
)

# Small MLPs whose Meta ``layers.K`` are transformers' ``layer{K+1}``.
_NUMBERED_MLP = re.compile(
    r"^(detr_decoder\.(?:presence_head|box_head|instance_box_head|ref_point_head|box_rpb_embed_[xy])"
    r"|dot_product_scoring\.text_mlp)\.layers\.(\d+)\."
)
_FUSED = re.compile(r"^(?P<base>.*)\.(?:qkv\.(?P<qkv>weight|bias)|in_proj_(?P<inproj>weight|bias))$")
_ROPE_TABLE = re.compile(r"\.attn\.freqs_cis$")
_POSITION_TABLE = "vision_encoder.backbone.embeddings.position_embeddings"
_TEXT_PROJECTION = "text_encoder.text_projection.weight"


def is_sam3_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True for Meta's SAM 3 layout: detector keys such as ``detector.backbone.vision_backbone.*``."""
    return any(key.startswith(DETECTOR_PREFIX + "backbone.vision_backbone.") for key in state_dict)


def _rename(key: str) -> str:
    for pattern, replacement in _RULES:
        key = re.sub(pattern, replacement, key)
    return _NUMBERED_MLP.sub(lambda m: f"{m[1]}.layer{int(m[2]) + 1}.", key)


def convert_sam3_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the ``detector.`` part of Meta's SAM 3 state dict onto ``transformers.Sam3Model`` names.

    Args:
        state_dict: Meta's keys (``detector.*``, ``tracker.*``) to tensors, unwrapped from ``{"model": ...}``.

    Returns:
        A new dict; tensors are shared where no reshaping is needed. ``tracker.*`` keys are not included (they are
        SAM 3's interactive / video tracker, not the concept model).

    Raises:
        ValueError: no ``detector.`` keys (not a SAM 3 file).
    """
    if not is_sam3_state_dict(state_dict):
        raise ValueError("not a SAM 3 checkpoint: no 'detector.backbone.vision_backbone.*' keys")
    converted: dict[str, torch.Tensor] = {}
    for meta_key, value in state_dict.items():
        if not meta_key.startswith(DETECTOR_PREFIX) or _ROPE_TABLE.search(meta_key):
            continue
        key = _rename(meta_key[len(DETECTOR_PREFIX) :])
        fused = _FUSED.match(key)
        if fused:
            param = fused["qkv"] or fused["inproj"]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), torch.chunk(value, 3, dim=0), strict=True):
                converted[f"{fused['base']}.{name}.{param}"] = part
            continue
        if key == _POSITION_TABLE:
            value = value[:, 1:]  # the pretraining class token's row: SAM 3 keeps no class token
        elif key == _TEXT_PROJECTION:
            value = value.t()
        converted[key] = value
    return converted
