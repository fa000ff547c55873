"""Box / point prompts on SAM 3 through its tracker head, computed as Meta's interactive predictor does.

Meta's ``Sam3Image.predict_inst`` (``SAM3InteractiveImagePredictor``) answers SAM-style prompts with a SAM 2 prompt
encoder and mask decoder fed by a second FPN neck on the *same* ViT pass as the concept detector. Here:

* :func:`build_tracker`: transformers' ``Sam3TrackerModel`` around the concept model's ViT (one module, shared),
  loaded ``strict=True`` from :func:`~.tracker_conversion.convert_tracker_state_dict`.
* :func:`tracker_features`: from the ViT's output, the tracker neck's three finest levels (the coarsest, like
  Meta's ``scalp=1``, is not computed), the first two projected by the decoder's ``conv_s0`` / ``conv_s1``, the
  third plus the no-memory embedding — for the released model float32 ``[1, 32, 288, 288]``,
  ``[1, 64, 144, 144]``, ``[1, 256, 72, 72]``.
* :func:`predict`: Meta's prompt layout (box corners first with labels 2 / 3, then the points, then one padding
  point), the mask decoder (3 masks with ``multimask``; otherwise one, chosen by Meta's dynamic multimask rule), and
  Meta's post-processing of the low-resolution logits before they are upsampled: background regions (logit ≤ 0) of
  at most :data:`MAX_HOLE_AREA` low-resolution pixels, 8-connected, become foreground (logit 10).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

__all__ = ["MAX_HOLE_AREA", "TRACKER_LEVELS", "build_tracker", "fill_holes", "predict", "tracker_features"]

#: Meta's ``SAM3InteractiveImagePredictor(max_hole_area=256)``: holes up to this many low-resolution pixels are filled.
MAX_HOLE_AREA = 256
#: Feature tensors :func:`tracker_features` adds to an embedding.
TRACKER_LEVELS = 3
_HOLE_LOGIT = 10.0  # Meta's fill value: mask_threshold (0) + 10


def build_tracker(concept: Any, state: dict[str, torch.Tensor]) -> Any:
    """A ``transformers.Sam3TrackerModel`` whose ViT is ``concept``'s (a ``Sam3Model``), loaded from ``state``.

    Args:
        concept: the loaded concept model; its ``vision_encoder.backbone`` becomes the tracker's.
        state: :func:`~.tracker_conversion.convert_tracker_state_dict`'s output.

    Raises:
        RuntimeError: ``state`` does not fit the model (``load_state_dict(strict=True)``'s message).
    """
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    vision = concept.config.vision_config
    backbone = vision.backbone_config
    config = Sam3TrackerConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config={"image_size": backbone.image_size, "patch_size": backbone.patch_size},
    )
    with torch.device("meta"):  # no second ViT is ever allocated: every tensor comes from ``state`` below
        tracker = Sam3TrackerModel(config)
    tracker.vision_encoder.backbone = concept.vision_encoder.backbone
    tracker.load_state_dict(state, strict=True, assign=True)
    left = [name for name, tensor in (*tracker.named_parameters(), *tracker.named_buffers()) if tensor.is_meta]
    if left:
        raise RuntimeError(f"tracker tensors without values: {left[:5]}")
    return tracker.eval()


def tracker_features(tracker: Any, spatial: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The decoder's inputs from the ViT output ``spatial`` (float ``[1, D, 72, 72]`` for the released model).

    Returns:
        ``(s0, s1, embedding)``: ``conv_s0`` of the 4× level, ``conv_s1`` of the 2× level, and the 1× level plus
        the no-memory embedding (the shapes are in the module docstring).
    """
    layers = tracker.vision_encoder.neck.fpn_layers
    finest, middle, coarse = (layers[i](spatial) for i in range(TRACKER_LEVELS))
    decoder = tracker.mask_decoder
    embedding = coarse + tracker.no_memory_embedding.reshape(1, -1, 1, 1)
    return decoder.conv_s0(finest), decoder.conv_s1(middle), embedding


def _sparse_prompt(
    points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's ``concat_points``: box corners (labels 2, 3) first, then the points; ``[N, P, 2]`` and ``[N, P]``."""
    coords: list[torch.Tensor] = []
    kinds: list[torch.Tensor] = []
    if boxes is not None:
        coords.append(boxes.reshape(count, 2, 2))
        kinds.append(torch.tensor([[2, 3]], dtype=torch.long, device=boxes.device).expand(count, 2))
    if points is not None and labels is not None:
        coords.append(points)
        kinds.append(labels)
    return torch.cat(coords, dim=1), torch.cat(kinds, dim=1)


def predict(
    tracker: Any,
    features: tuple[torch.Tensor, ...],
    *,
    points: torch.Tensor | None,
    labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_inputs: torch.Tensor | None,
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits and predicted IoU for N prompts on one image.

    Args:
        features: :func:`tracker_features`' output.
        points: float ``[N, P, 2]`` ``(x, y)`` in the model's input frame (pixels of the ``image_size`` square).
        labels: int ``[N, P]``: 1 foreground, 0 background.
        boxes: float ``[N, 4]`` XYXY in the same frame.
        mask_inputs: float ``[N, 1, S, S]`` low-resolution logits of earlier predictions (``S`` = 4 × the grid).
        multimask: three masks per prompt, else one.

    Returns:
        ``(logits, scores)``: float ``[N, K, S, S]`` (raw decoder logits) and ``[N, K]``, ``K`` = 3 or 1.
    """
    s0, s1, embedding = features
    count = next(t.shape[0] for t in (boxes, points, mask_inputs) if t is not None)
    encoder = tracker.prompt_encoder
    if points is None and boxes is None:  # a mask alone: no sparse tokens at all, as in Meta's prompt encoder
        sparse = embedding.new_zeros(count, 1, 0, embedding.shape[1])
    else:
        coords, kinds = _sparse_prompt(points, labels, boxes, count)
        sparse = encoder._embed_points(coords[:, None], kinds[:, None], pad=True)  # [N, 1, P + 1, C]
    if mask_inputs is not None:
        dense = encoder.mask_embed(mask_inputs)
    else:
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(count, -1, *embedding.shape[-2:])
    positions = tracker.get_image_wide_positional_embeddings().expand(count, -1, -1, -1)
    logits, scores, _, _ = tracker.mask_decoder(
        image_embeddings=embedding.expand(count, -1, -1, -1),
        image_positional_embeddings=positions,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        high_resolution_features=[s0.expand(count, -1, -1, -1), s1.expand(count, -1, -1, -1)],
    )
    return logits[:, 0], scores[:, 0]


def fill_holes(logits: np.ndarray, max_area: int = MAX_HOLE_AREA) -> np.ndarray:
    """Meta's hole filling of low-resolution logits: 8-connected regions of values ≤ 0 with at most ``max_area``
    pixels are set to 10 (a region touching the border counts like any other).

    Args:
        logits: float32 ``[..., S, S]``.

    Returns:
        A new float32 array of the same shape.
    """
    out = np.array(logits, dtype=np.float32, copy=True)
    flat = out.reshape(-1, *out.shape[-2:])
    for plane in flat:
        background = (plane <= 0.0).astype(np.uint8)
        count, regions, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= max_area) + 1  # label 0: the foreground
        if count > 1 and small.size:
            plane[np.isin(regions, small)] = _HOLE_LOGIT
    return out
