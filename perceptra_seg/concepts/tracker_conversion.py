"""Convert the interactive (box / point) part of Meta's SAM 3 checkpoint into transformers' ``Sam3TrackerModel`` names.

Meta's ``sam3.pt`` holds, next to the concept detector (``detector.*``, see :mod:`.conversion`), the tracker that
``build_sam3_image_model(enable_inst_interactivity=True)`` loads as its interactive predictor:

* ``tracker.sam_prompt_encoder.*``, ``tracker.sam_mask_decoder.*`` and ``tracker.no_mem_embed``: SAM 2's prompt
  encoder and mask decoder (same layout as a SAM 2 checkpoint, so :func:`perceptra_seg.conversion.convert_state_dict`
  maps them), the embedding added to the coarsest feature level of an image without memory;
* ``detector.backbone.vision_backbone.sam2_convs.*``: a second FPN neck on the detector's ViT (the layout of the
  detector's ``convs``), whose levels feed the tracker;
* the tracker's video-memory modules (``maskmem_backbone``, ``transformer``, ``obj_ptr_proj`` ...), not used for
  single images and not converted.

The tracker has no ViT of its own: it reads the detector's. The caller loads the result into a ``Sam3TrackerModel``
whose ``vision_encoder.backbone`` *is* the concept model's (one module), with ``strict=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..conversion import convert_state_dict
from .conversion import DETECTOR_PREFIX, TRACKER_PREFIX, _rename

__all__ = ["SAM2_NECK_PREFIX", "convert_tracker_state_dict", "has_tracker"]

#: Meta's key prefix of the SAM 2-style neck (the detector's own neck is ``...vision_backbone.convs``).
SAM2_NECK_PREFIX = DETECTOR_PREFIX + "backbone.vision_backbone.sam2_convs."
_DETECTOR_NECK = "backbone.vision_backbone.convs."
# SAM 3's tracker keeps SAM 1's two-layer MLP block (``lin1`` / ``lin2``) in the decoder's two-way transformer, where a
# SAM 2 file has ``layers.0`` / ``layers.1``; transformers names both ``proj_in`` / ``proj_out``.
_MLP_BLOCK = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\.lin([12])\.")


def has_tracker(state_dict: Mapping[str, object]) -> bool:
    """True when Meta's file carries the interactive tracker (its mask decoder under ``tracker.``)."""
    return any(key.startswith(TRACKER_PREFIX + "sam_mask_decoder.") for key in state_dict)


def convert_tracker_state_dict(
    state_dict: Mapping[str, torch.Tensor], backbone: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map the tracker's image path of Meta's SAM 3 state dict onto ``transformers.Sam3TrackerModel`` names.

    Args:
        state_dict: Meta's keys (``detector.*``, ``tracker.*``), unwrapped from ``{"model": ...}``.
        backbone: the concept model's ViT parameters (``vision_encoder.backbone``'s ``state_dict()``): the tracker's
            ``vision_encoder.backbone.*`` entries, so the loaded tracker shares them.

    Returns:
        ``vision_encoder.backbone.*`` (from ``backbone``), ``vision_encoder.neck.*`` (from ``sam2_convs``),
        ``prompt_encoder.*``, ``mask_decoder.*``, ``shared_image_embedding.*`` and ``no_memory_embedding``.
        Tensors are shared, not copied.
    """
    tracker = {key[len(TRACKER_PREFIX) :]: value for key, value in state_dict.items() if key.startswith(TRACKER_PREFIX)}
    renamed = convert_state_dict(tracker, "sam2")  # keeps only the image path: prompt encoder, decoder, no_mem_embed
    converted = {
        _MLP_BLOCK.sub(lambda m: f"{m[1]}.{'proj_in' if m[2] == '1' else 'proj_out'}.", key): value
        for key, value in renamed.items()
    }
    for key, value in state_dict.items():
        if key.startswith(SAM2_NECK_PREFIX):
            # same layout as the detector's neck: rename as that one, then it lands on the tracker's vision neck
            converted[_rename(_DETECTOR_NECK + key[len(SAM2_NECK_PREFIX) :])] = value
    converted.update({f"vision_encoder.backbone.{key}": value for key, value in backbone.items()})
    return converted
