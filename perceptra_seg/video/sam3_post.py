"""Post-processing of one SAM 3 video step into per-object masks at the frame's size.

The model answers each frame with low-resolution mask logits per object id (``[1, h, w]`` float32), a detection
score and a tracker score per id, plus the ids to hide on this frame (suppressed) and for good (removed by the
hot start). This module turns that into what a caller sees, the way Meta's video inference does it:

1. every mask is resized (bilinear, ``align_corners=False``) to the frame's ``[H, W]`` and thresholded at 0;
2. empty masks and hidden ids are dropped;
3. where masks overlap, each pixel goes to the object with the highest tracker score (the first in id order on a
   tie), and an object whose tracker score is not above 0 keeps no pixel.

Boxes are not made here: callers derive them from the masks (:func:`perceptra_seg.utils.masks.mask_bbox`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ConceptFrame", "postprocess_step"]

#: ``(object ids int64 [N], detection scores float32 [N], masks bool [N, H, W])``, ids ascending.
ConceptFrame = tuple[np.ndarray, np.ndarray, np.ndarray]


def exclusive_masks(masks: torch.Tensor, tracker_scores: torch.Tensor) -> torch.Tensor:
    """Give each pixel claimed by several masks to the one with the highest tracker score.

    Args:
        masks: ``[N, H, W]`` bool.
        tracker_scores: ``[N]`` float32, in the masks' order.

    Returns:
        ``[N, H, W]`` bool; pixel ``(y, x)`` stays on for object ``k`` only if it was on, ``k`` has the highest score
        among the masks on there (lowest index on a tie) and that score is above 0.
    """
    if masks.shape[0] < 2:
        return masks
    claims = torch.where(masks, tracker_scores[:, None, None].to(torch.float32), torch.zeros((), dtype=torch.float32))
    winner = claims.argmax(dim=0, keepdim=True)
    own = winner == torch.arange(masks.shape[0], device=masks.device)[:, None, None]
    return own & (claims > 0)


def postprocess_step(output: Any, hidden: Iterable[int], height: int, width: int) -> ConceptFrame:
    """One frame's objects from a model step.

    Args:
        output: transformers' ``Sam3VideoSegmentationOutput`` (``obj_id_to_mask``: id → ``[1, h, w]`` logits,
            ``obj_id_to_score``, ``obj_id_to_tracker_score``, ``suppressed_obj_ids``).
        hidden: ids never to report (the session's hot-start removals), besides this step's suppressed ids.
        height, width: the frame's size in pixels.
    """
    logits = output.obj_id_to_mask or {}
    hide = set(int(i) for i in hidden) | set(int(i) for i in (output.suppressed_obj_ids or ()))
    ids = [i for i in sorted(logits) if int(i) not in hide]
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, height, width), bool)
    low = torch.cat([logits[i] for i in ids]).to(torch.float32)
    masks = F.interpolate(low[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0] > 0
    keep = masks.flatten(1).any(dim=1).cpu()
    ids = [i for i, k in zip(ids, keep.tolist(), strict=True) if k]
    masks = masks[keep.to(masks.device)]
    tracker = output.obj_id_to_tracker_score or {}
    tracker_scores = torch.tensor([float(tracker.get(i, 0.0)) for i in ids], dtype=torch.float32)
    masks = exclusive_masks(masks, tracker_scores.to(masks.device))
    scores = np.array([float(output.obj_id_to_score[i]) for i in ids], np.float32)
    return np.array(ids, np.int64), scores, masks.cpu().numpy()
