"""Convert Meta's original SAM checkpoints into the key layout of the transformers models.

SAM 1 files (``sam_vit_*.pth``) hold the flat state dict of Meta's ``Sam`` module; SAM 2 / 2.1 files
(``sam2*_hiera_*.pt``) hold ``{"model": state_dict}``. :func:`convert_state_dict` maps either onto the parameter
names of ``transformers.SamModel`` / ``Sam2Model``; the caller loads the result with ``strict=True``.

The rename rules are data (ordered ``(pattern, replacement)`` regex pairs per family) plus two structural steps that
are shared by both families: multi-layer MLP renumbering and the shared positional-encoding matrix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .preprocessing import SAM1_PIXEL_MEAN, SAM1_PIXEL_STD
from .registry import Architecture, Family

__all__ = [
    "convert_mobile_sam_state_dict",
    "convert_sam_hq_state_dict",
    "convert_state_dict",
    "detect_architecture",
    "detect_family",
    "sam1_to_meta",
    "unwrap_checkpoint",
]

# Mask-decoder upscaling and prompt-encoder mask downscaling: the same Sequential layout in both families.
_DECODER_RULES: tuple[tuple[str, str], ...] = (
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
)

_SAM1_RULES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.neck\.0\.", ".neck.conv1."),
    (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."),
    (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.norm(\d*|_final_attn)\.", r".layer_norm\1."),
    (r"\.blocks\.", ".layers."),
    *_DECODER_RULES,
    (r"\.point_embeddings\.", ".point_embed."),
)

_SAM2_RULES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"^(vision_encoder\.backbone\.blocks\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    *_DECODER_RULES,
    (r"^(mask_decoder\.transformer(?:\..*)?)\.out_proj\.", r"\1.o_proj."),
    (r"^(mask_decoder\.transformer(?:\..*)?)\.norm(\d+|_final_attn)\.", r"\1.layer_norm\2."),
    (r"^no_mem_embed$", "no_memory_embedding"),
)

# Prefixes of the SAM 2 image path; everything else in a SAM 2 file belongs to video tracking (memory modules).
_SAM2_IMAGE_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
_GAUSSIAN_SUFFIX = "pe_layer.positional_encoding_gaussian_matrix"
_MLP_LAYER = re.compile(r"^(?P<mlp>.*)\.layers\.(?P<index>\d+)\.(?P<param>weight|bias)$")


def unwrap_checkpoint(obj: object) -> dict[str, torch.Tensor]:
    """Return the state dict inside a loaded checkpoint object (``{"model": sd}`` for SAM 2, ``sd`` for SAM 1).

    Raises:
        ValueError: the object is not a mapping of parameter names to tensors.
    """
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError("checkpoint does not contain a state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"checkpoint entry {bad[0]!r} is not a named tensor")
    return dict(obj)


def detect_family(state_dict: Mapping[str, torch.Tensor]) -> Family:
    """Tell a SAM 1 state dict from a SAM 2 one by its top-level module names.

    Raises:
        ValueError: neither layout (e.g. a transformers-format or unrelated state dict).
    """
    if any(k.startswith("detector.backbone.vision_backbone.") for k in state_dict):
        return "sam3"
    if any(k.startswith("sam_mask_decoder.") for k in state_dict):
        return "sam2"
    if any(k.startswith("mask_decoder.") for k in state_dict) and any(
        k.startswith("image_encoder.") for k in state_dict
    ):
        return "sam1"
    raise ValueError(
        "not a Meta SAM checkpoint: expected 'image_encoder.*' with 'mask_decoder.*' or 'sam_mask_decoder.*'"
    )


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _renumber_mlps(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Meta's ``<mlp>.layers.{0..n-1}`` to transformers' ``proj_in`` / ``layers.{0..n-3}`` / ``proj_out``.

    Only the *last* ``.layers.K.`` of a key is an MLP index; earlier ones (``transformer.layers.N``) are kept.
    """
    depth: dict[str, int] = {}
    for key in state_dict:
        match = _MLP_LAYER.match(key)
        if match:
            depth[match["mlp"]] = max(depth.get(match["mlp"], 0), int(match["index"]) + 1)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _MLP_LAYER.match(key)
        if match and depth[match["mlp"]] >= 2:
            index, last = int(match["index"]), depth[match["mlp"]] - 1
            part = "proj_in" if index == 0 else "proj_out" if index == last else f"layers.{index - 1}"
            key = f"{match['mlp']}.{part}.{match['param']}"
        renamed[key] = value
    return renamed


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], family: Family) -> dict[str, torch.Tensor]:
    """Map a Meta SAM state dict onto transformers' ``SamModel`` (``sam1``) or ``Sam2Model`` (``sam2``) names.

    Args:
        state_dict: Meta's parameter names to tensors (already unwrapped from ``{"model": ...}``).
        family: which architecture the file holds.

    Returns:
        A new dict; tensors are shared, not copied. SAM 1's ``pixel_mean``/``pixel_std`` buffers and SAM 2's
        video-tracking modules are dropped (preprocessing constants live in our own code).
    """
    if family == "sam1":
        rules = _SAM1_RULES
        source = {k: v for k, v in state_dict.items() if k not in ("pixel_mean", "pixel_std")}
    else:
        rules = _SAM2_RULES
        source = {k: v for k, v in state_dict.items() if k.startswith(_SAM2_IMAGE_PREFIXES)}
    converted: dict[str, torch.Tensor] = {}
    point_rows: dict[int, torch.Tensor] = {}
    for key, value in source.items():
        if key.endswith(_GAUSSIAN_SUFFIX):
            converted["shared_image_embedding.positional_embedding"] = value
            converted["prompt_encoder.shared_embedding.positional_embedding"] = value
            continue
        sam2_point = re.fullmatch(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight", key)
        if family == "sam2" and sam2_point:
            point_rows[int(sam2_point[1])] = value
            continue
        converted[_rename(key, rules)] = value
    if point_rows:
        converted["prompt_encoder.point_embed.weight"] = torch.cat([point_rows[i] for i in sorted(point_rows)], dim=0)
    return _renumber_mlps(converted)


# transformers name → Meta name, applied in order: the inverse of _SAM1_RULES (with _DECODER_RULES).
_SAM1_TO_META: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.", "image_encoder."),
    (r"\.neck\.conv1\.", ".neck.0."),
    (r"\.neck\.layer_norm1\.", ".neck.1."),
    (r"\.neck\.conv2\.", ".neck.2."),
    (r"\.neck\.layer_norm2\.", ".neck.3."),
    (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
    (r"^image_encoder\.layers\.", "image_encoder.blocks."),
    (r"\.upscale_conv1\.", ".output_upscaling.0."),
    (r"\.upscale_layer_norm\.", ".output_upscaling.1."),
    (r"\.upscale_conv2\.", ".output_upscaling.3."),
    (r"\.mask_embed\.conv1\.", ".mask_downscaling.0."),
    (r"\.mask_embed\.layer_norm1\.", ".mask_downscaling.1."),
    (r"\.mask_embed\.conv2\.", ".mask_downscaling.3."),
    (r"\.mask_embed\.layer_norm2\.", ".mask_downscaling.4."),
    (r"\.mask_embed\.conv3\.", ".mask_downscaling.6."),
    (r"\.point_embed\.", ".point_embeddings."),
    (r"\.layer_norm(\d*|_final_attn)\.", r".norm\1."),
)
_MLP_PART_HF = re.compile(r"^(?P<mlp>.*)\.(?P<part>proj_in|proj_out|layers\.\d+)\.(?P<param>weight|bias)$")


def sam1_to_meta(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers ``SamModel`` state dict to Meta's ``Sam`` layout (flat dict, as in ``sam_vit_b``).

    The positional-encoding matrix, held twice by transformers (tied), becomes Meta's single
    ``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``; ``pixel_mean``/``pixel_std`` are added.
    ``convert_state_dict(sam1_to_meta(state), "sam1")`` gives ``state`` back exactly.
    """
    shared = state["shared_image_embedding.positional_embedding"]
    if not torch.equal(shared, state["prompt_encoder.shared_embedding.positional_embedding"]):
        raise ValueError("the two copies of the positional-encoding matrix differ")
    hidden: dict[str, int] = {}  # MLP → number of hidden layers (``layers.K`` weights)
    with_output: set[str] = set()  # MLPs that have a ``proj_out``
    for key in state:
        match = _MLP_PART_HF.match(key)
        if match and match["part"] == "proj_out":
            with_output.add(match["mlp"])
        elif match and match["part"].startswith("layers.") and match["param"] == "weight":
            hidden[match["mlp"]] = hidden.get(match["mlp"], 0) + 1
    depth = {mlp: hidden.get(mlp, 0) + 2 for mlp in with_output}  # proj_in + hidden layers + proj_out
    meta: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("shared_embedding.positional_embedding") or key.startswith("shared_image_embedding."):
            continue
        match = _MLP_PART_HF.match(key)
        if match and match["mlp"] in depth:
            part = match["part"]
            index = 0 if part == "proj_in" else depth[match["mlp"]] - 1 if part == "proj_out" else int(part[7:]) + 1
            key = f"{match['mlp']}.layers.{index}.{match['param']}"
        for pattern, replacement in _SAM1_TO_META:
            key = re.sub(pattern, replacement, key)
        meta[key] = value.detach().clone().contiguous()
    meta["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = shared.detach().clone()
    meta["pixel_mean"] = torch.from_numpy(SAM1_PIXEL_MEAN.copy()).view(-1, 1, 1)
    meta["pixel_std"] = torch.from_numpy(SAM1_PIXEL_STD.copy()).view(-1, 1, 1)
    return meta


# SAM-HQ (``sam_hq_vit_*.pth``): a SAM 1 state dict plus the HQ output token, its MLP and three small conv stacks
# (``Sequential`` indices 0 / 1 / 3: transposed conv or conv, LayerNorm2d, conv; 2 is the activation). Applied after
# the SAM 1 renames, which already turned ``hf_mlp.layers.K`` into ``proj_in`` / ``layers.0`` / ``proj_out``.
_SAM_HQ_RULES: tuple[tuple[str, str], ...] = (
    (r"^mask_decoder\.hf_token\.", "mask_decoder.hq_token."),
    (r"^mask_decoder\.hf_mlp\.", "mask_decoder.hq_mask_mlp."),
    (r"^mask_decoder\.compress_vit_feat\.0\.", "mask_decoder.compress_vit_conv1."),
    (r"^mask_decoder\.compress_vit_feat\.1\.", "mask_decoder.compress_vit_norm."),
    (r"^mask_decoder\.compress_vit_feat\.3\.", "mask_decoder.compress_vit_conv2."),
    (r"^mask_decoder\.embedding_encoder\.0\.", "mask_decoder.encoder_conv1."),
    (r"^mask_decoder\.embedding_encoder\.1\.", "mask_decoder.encoder_norm."),
    (r"^mask_decoder\.embedding_encoder\.3\.", "mask_decoder.encoder_conv2."),
    (r"^mask_decoder\.embedding_maskfeature\.0\.", "mask_decoder.mask_conv1."),
    (r"^mask_decoder\.embedding_maskfeature\.1\.", "mask_decoder.mask_norm."),
    (r"^mask_decoder\.embedding_maskfeature\.3\.", "mask_decoder.mask_conv2."),
)
_SAM_HQ_MARKER = "mask_decoder.hf_token.weight"


_MOBILE_SAM_MARKER = "image_encoder.patch_embed.seq.0.c.weight"
_EDGETAM_MARKER = "image_encoder.trunk.body.stem.conv1.c.weight"  # = conversion_edgetam.EDGETAM_MARKER


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> Architecture:
    """``sam_hq`` for a SAM-HQ file (it has the HQ output token ``mask_decoder.hf_token``), ``sam3`` for a SAM 3
    file (``detector.*`` keys), ``mobile_sam`` for a MobileSAM file (TinyViT's convolutional patch embedding
    ``image_encoder.patch_embed.seq``), ``edgetam`` for an EdgeTAM file (a RepViT trunk,
    ``image_encoder.trunk.body.stem``), else ``sam``."""
    if _SAM_HQ_MARKER in state_dict:
        return "sam_hq"
    if any(k.startswith("detector.backbone.vision_backbone.") for k in state_dict):
        return "sam3"
    if _EDGETAM_MARKER in state_dict:
        return "edgetam"
    return "mobile_sam" if _MOBILE_SAM_MARKER in state_dict else "sam"


def convert_sam_hq_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, tiny_vit: bool = False
) -> dict[str, torch.Tensor]:
    """Map a SAM-HQ state dict (the authors' ``sam_hq_vit_*.pth``) onto transformers' ``SamHQModel`` names.

    The ViT, prompt encoder and SAM part of the decoder are named as in SAM 1 (same renames); the HQ additions get
    :data:`_SAM_HQ_RULES`. ``tiny_vit``: the file is ``sam_hq_vit_tiny.pth``, whose image encoder is MobileSAM's
    TinyViT (kept under its own names, as :func:`convert_mobile_sam_state_dict` does). Tensors are shared, not
    copied; the caller loads the result with ``strict=True``.
    """
    if tiny_vit:
        encoder = _tiny_vit_keys(state_dict)
        rest = {key: value for key, value in state_dict.items() if not key.startswith("image_encoder.")}
        return {**encoder, **{_rename(k, _SAM_HQ_RULES): v for k, v in convert_state_dict(rest, "sam1").items()}}
    return {_rename(key, _SAM_HQ_RULES): value for key, value in convert_state_dict(state_dict, "sam1").items()}


# TinyViT's ImageNet classification head: in the authors' file, never used by SAM.
_TINY_VIT_HEAD = ("image_encoder.head.", "image_encoder.norm_head.")


def convert_mobile_sam_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map MobileSAM's ``mobile_sam.pt`` onto our model: ``SamModel`` with a :class:`TinyViTEncoder` vision encoder.

    Image-encoder keys keep their names under ``vision_encoder.`` (our TinyViT uses the authors' layout), its unused
    classification head is dropped; the prompt encoder and mask decoder are SAM 1's and get SAM 1's renames.
    """
    rest = {key: value for key, value in state_dict.items() if not key.startswith("image_encoder.")}
    return {**_tiny_vit_keys(state_dict), **convert_state_dict(rest, "sam1")}


def _tiny_vit_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A TinyViT image encoder's keys under ``vision_encoder.`` (names kept), without its classification head."""
    return {
        "vision_encoder." + key[len("image_encoder.") :]: value
        for key, value in state_dict.items()
        if key.startswith("image_encoder.") and not key.startswith(_TINY_VIT_HEAD)
    }
