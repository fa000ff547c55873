"""SAM 3 concept detection on transformers' ``Sam3Model`` parameters, computed as Meta's ``Sam3Processor`` does.

transformers' ``Sam3Model.forward`` differs from Meta's image model in one place that changes results: Meta always
runs its geometry (exemplar) encoder, which with no exemplar boxes still emits its CLS token, so the prompt is the
text tokens *plus one* token, and that token takes part in the DETR encoder, the decoder's text attention, the pooled
scoring and the mask head. transformers runs the geometry encoder only when boxes are given. :func:`detect` follows
Meta: text features and geometry-encoder output are always concatenated. The geometry encoder's box pooling uses our
:func:`~perceptra_seg.concepts.roi_align.roi_align` (torchvision's semantics) and is skipped for zero boxes.

Preprocessing (:func:`preprocess`) is Meta's too: the uint8 RGB image resized to 1008×1008 *as uint8* (bilinear,
antialias), then scaled to [0, 1] and normalised with mean 0.5, std 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, concat_padded_sequences, inverse_sigmoid

from .roi_align import roi_align
from .tracker import tracker_features

__all__ = ["Detections", "detect", "encode_image", "encode_text", "preprocess"]


def preprocess(image: np.ndarray, resolution: int) -> torch.Tensor:
    """RGB uint8 ``[H, W, 3]`` → float32 ``[1, 3, resolution, resolution]`` in [-1, 1] (Meta's transform)."""
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    resized = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return (resized.float() / 255.0 - 0.5) / 0.5


def encode_image(model: Any, pixels: torch.Tensor, tracker: Any = None) -> tuple[torch.Tensor, ...]:
    """One ViT pass, then the FPN levels each head uses: ``(feat_0, ..., feat_{L-1}, pos_0, ...)`` for the detector,
    followed (with ``tracker``) by :func:`~perceptra_seg.concepts.tracker.tracker_features`' three tensors.

    For the released model ``L`` = 3: ``[1, 256, 288, 288]``, ``[1, 256, 144, 144]``, ``[1, 256, 72, 72]`` (the
    coarsest FPN level is not used by the image model and is not kept).
    """
    vision = model.vision_encoder
    hidden = vision.backbone(pixels).last_hidden_state  # [1, h * w, D]
    patch = vision.config.backbone_config.patch_size
    height, width = pixels.shape[-2] // patch, pixels.shape[-1] // patch
    spatial = hidden.view(hidden.shape[0], height, width, -1).permute(0, 3, 1, 2)
    levels, positions = vision.neck(spatial)
    features = tuple(levels[:-1]) + tuple(positions[:-1])
    if tracker is None:
        return features
    return features + tracker_features(tracker, spatial)


def encode_text(model: Any, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Text features ``[1, T, 256]`` and validity mask ``[1, T]`` (``True`` = a real token) of token ids ``[1, T]``.

    Like Meta's text encoder, the CLIP transformer sees only its causal mask (no padding mask); the padding (id 0)
    is masked in everything downstream.
    """
    hidden = model.text_encoder.text_model(input_ids=input_ids).last_hidden_state
    return model.text_projection(hidden), input_ids != 0


def _geometry(
    model: Any, features: tuple[torch.Tensor, ...], positions: tuple[torch.Tensor, ...], boxes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's geometry encoder on ``boxes`` (float ``[1, K, 5]``: normalised cx, cy, w, h, label 1/0), ``K`` ≥ 0.

    Returns the prompt tokens ``[1, K + 1, 256]`` (the boxes, then the CLS token) and their mask (all valid).
    """
    encoder = model.geometry_encoder
    hidden = encoder.hidden_size
    last = features[-1]
    flat = last.flatten(2).transpose(1, 2)
    flat_pos = positions[-1].flatten(2).transpose(1, 2)
    count = boxes.shape[1]
    if count:
        coords, labels = boxes[..., :4], boxes[..., 4].long()
        embed = encoder.boxes_direct_project(coords)
        normed = encoder.vision_layer_norm(last.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        height, width = normed.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=coords.dtype, device=coords.device)
        sampled = roi_align(normed, box_cxcywh_to_xyxy(coords) * scale, encoder.roi_size)
        embed = embed + encoder.boxes_pool_project(sampled).view(1, count, hidden)
        cx, cy, w, h = coords.unbind(-1)
        position = encoder._encode_box_coordinates(cx.flatten(), cy.flatten(), w.flatten(), h.flatten())
        embed = embed + encoder.boxes_pos_enc_project(position.view(1, count, -1))
        embed = encoder.label_embed(labels) + embed
    else:
        embed = last.new_zeros(1, 0, hidden)
    mask = torch.ones(1, count, dtype=torch.bool, device=last.device)
    cls = encoder.cls_embed.weight.view(1, 1, hidden)
    tokens, mask = concat_padded_sequences(embed, mask, cls, torch.ones(1, 1, dtype=torch.bool, device=mask.device))
    tokens = encoder.prompt_layer_norm(encoder.final_proj(tokens))
    attention = create_bidirectional_mask(config=encoder.config, inputs_embeds=tokens, attention_mask=mask)
    for layer in encoder.layers:
        tokens = layer(prompt_feats=tokens, vision_feats=flat, vision_pos_encoding=flat_pos, prompt_mask=attention)
    return encoder.output_layer_norm(tokens), mask


@dataclass(frozen=True)
class Detections:
    """Every query's prediction for one prompt (``Q`` = 200 queries for the released model).

    Attributes:
        scores: float ``[Q]``: ``sigmoid(class logit) × sigmoid(presence logit)``, Meta's instance score.
        boxes: float ``[Q, 4]`` XYXY normalised to [0, 1].
        mask_logits: float ``[Q, h, w]`` low-resolution mask logits (288×288 for the released model).
    """

    scores: torch.Tensor
    boxes: torch.Tensor
    mask_logits: torch.Tensor


def detect(
    model: Any,
    features: tuple[torch.Tensor, ...],
    text: tuple[torch.Tensor, torch.Tensor],
    boxes: torch.Tensor,
) -> Detections:
    """Run the detector head for one prompt on one encoded image.

    Args:
        model: a ``transformers.Sam3Model``.
        features: :func:`encode_image`'s output.
        text: :func:`encode_text`'s output for the phrase.
        boxes: float ``[1, K, 5]`` exemplar boxes (normalised cx, cy, w, h, label: 1 positive, 0 negative), K ≥ 0.
    """
    levels = len(features) // 2
    fpn, positions = features[:levels], features[levels:]
    text_features, text_mask = text
    geometry, geometry_mask = _geometry(model, fpn, positions, boxes)
    prompt = torch.cat([text_features, geometry], dim=1)
    prompt_mask = torch.cat([text_mask, geometry_mask], dim=1)

    encoded = model.detr_encoder(
        vision_features=[fpn[-1]], text_features=prompt, vision_pos_embeds=[positions[-1]], text_mask=prompt_mask
    )
    decoded = model.detr_decoder(
        vision_features=encoded.last_hidden_state,
        text_features=encoded.text_features,
        vision_pos_encoding=encoded.pos_embeds_flattened,
        text_mask=prompt_mask,
        spatial_shapes=encoded.spatial_shapes,
    )
    queries = decoded.intermediate_hidden_states[-1:]
    offsets = model.detr_decoder.box_head(queries)
    boxes_cxcywh = (inverse_sigmoid(decoded.reference_boxes[-1:]) + offsets).sigmoid()
    logits = model.dot_product_scoring(
        decoder_hidden_states=queries, text_features=encoded.text_features, text_mask=prompt_mask
    ).squeeze(-1)
    presence = decoded.presence_logits[-1]
    masks = model.mask_decoder(
        decoder_queries=queries[0],
        backbone_features=list(fpn),
        encoder_hidden_states=encoded.last_hidden_state,
        prompt_features=prompt,
        prompt_mask=prompt_mask,
    ).pred_masks
    scores = logits[0].sigmoid() * presence.sigmoid().reshape(-1, 1)
    return Detections(scores=scores[0], boxes=box_cxcywh_to_xyxy(boxes_cxcywh[0, 0]), mask_logits=masks[0])
