"""Convert Meta's whole SAM 3 checkpoint (``detector.*`` and ``tracker.*``) into transformers' ``Sam3VideoModel`` names.

Meta's ``sam3.pt`` holds three parts that ``Sam3VideoModel`` keeps under its own prefixes:

* the concept detector (``detector.*`` less the two parts below) → ``detector_model.*``, converted exactly as the
  image path does (:func:`perceptra_seg.concepts.conversion.convert_sam3_state_dict`);
* the tracker's FPN neck, which Meta keeps inside the detector's vision backbone
  (``detector.backbone.vision_backbone.sam2_convs.*``, the same layout as the detector's own ``convs.*``) →
  ``tracker_neck.*``;
* the tracker (``tracker.*``), a SAM 2.1 memory tracker whose memory attention Meta calls ``transformer.encoder``,
  whose memory encoder it calls ``maskmem_backbone`` and whose mask decoder's MLP blocks are SAM 1's ``lin1`` /
  ``lin2``; after those renames it is converted exactly as a SAM 2.1 file
  (:func:`perceptra_seg.video.conversion.convert_video_state_dict`) → ``tracker_model.*``.

The geometry encoder's point projections (``geometry_encoder.points_*``) are not used by Meta's concept path and
have no counterpart in transformers; they are left out. The caller loads the result with ``strict=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..concepts.conversion import DETECTOR_PREFIX, convert_sam3_state_dict
from ..concepts.tracker_conversion import SAM2_NECK_PREFIX as _TRACKER_NECK
from .conversion import convert_video_state_dict

__all__ = ["convert_sam3_video_state_dict", "has_sam3_tracker"]

_TRACKER = "tracker."
_DETECTOR_NECK = DETECTOR_PREFIX + "backbone.vision_backbone.convs."
_UNUSED = DETECTOR_PREFIX + "geometry_encoder.points_"
# Meta's SAM 3 tracker names → Meta's SAM 2.1 names for the same modules.
_TRACKER_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^transformer\.encoder\.", "memory_attention."),
    (r"^maskmem_backbone\.", "memory_encoder."),
    # SAM 1's two-layer MLP block in the mask decoder's transformer (SAM 2 files number the same layers)
    (r"^(sam_mask_decoder\.transformer\.layers\.\d+\.mlp)\.lin1\.", r"\1.layers.0."),
    (r"^(sam_mask_decoder\.transformer\.layers\.\d+\.mlp)\.lin2\.", r"\1.layers.1."),
)


def has_sam3_tracker(state_dict: Mapping[str, object]) -> bool:
    """True when a SAM 3 state dict also holds the video tracker (``tracker.*`` and the tracker neck)."""
    return any(k.startswith(_TRACKER + "transformer.encoder.") for k in state_dict) and any(
        k.startswith(_TRACKER_NECK) for k in state_dict
    )


def convert_sam3_video_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map Meta's SAM 3 state dict (unwrapped from ``{"model": ...}``) onto ``Sam3VideoModel`` parameter names.

    Returns:
        A new dict; tensors are shared where no reshaping is needed.

    Raises:
        ValueError: not a SAM 3 file, or a SAM 3 file without the video tracker (an image-only export).
    """
    if not has_sam3_tracker(state_dict):
        raise ValueError("the checkpoint has no SAM 3 video tracker (no 'tracker.*' / 'sam2_convs' weights)")
    detector = {
        k: v for k, v in state_dict.items() if k.startswith("detector.") and not k.startswith((_TRACKER_NECK, _UNUSED))
    }
    converted = {"detector_model." + k: v for k, v in convert_sam3_state_dict(detector).items()}
    # The tracker neck has the detector neck's layout: convert it under the detector's name, then move it.
    neck = {_DETECTOR_NECK + k[len(_TRACKER_NECK) :]: v for k, v in state_dict.items() if k.startswith(_TRACKER_NECK)}
    for key, value in convert_sam3_state_dict(neck).items():
        converted["tracker_neck." + key.removeprefix("vision_encoder.neck.")] = value
    tracker: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_TRACKER):
            name = key[len(_TRACKER) :]
            for pattern, replacement in _TRACKER_RENAMES:
                name = re.sub(pattern, replacement, name)
            tracker[name] = value
    converted.update({"tracker_model." + k: v for k, v in convert_video_state_dict(tracker).items()})
    return converted
