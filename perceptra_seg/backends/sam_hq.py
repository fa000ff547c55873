"""SAM-HQ's mask decoder as the authors compute it, on transformers' ``SamHQMaskDecoder`` parameters.

transformers 5.x's ``SamHQMaskDecoder.forward`` drops the image half of the two-way transformer's output: it
upsamples the image embedding *before* the transformer (with its height and width swapped) instead of the keys the
transformer returns. With the same random-weight checkpoint its low-resolution logits differ from the authors'
``segment_anything_hq`` by about 2 on a scale of 3.5 (IoU around 0.6). :class:`SamHQDecoder` keeps every parameter
of that class (same names, so checkpoints load with ``strict=True`` either way) and replaces only ``forward``,
following the authors' ``MaskDecoderHQ``:

* HQ features: the image embedding and the early ViT feature (the first global-attention block's output), each
  upsampled 4× and summed;
* output tokens ``[iou, 4 SAM mask tokens, HQ token]`` plus the prompt tokens go through the two-way transformer;
* SAM masks come from the upsampled transformer keys, the HQ mask from those keys refined and added to the HQ
  features;
* ``multimask_output``: the best-scoring of SAM's three multimask masks (as the authors' predictor returns it), else
  SAM's single mask; ``hq_token_only``: the HQ mask alone, else SAM's mask plus the HQ mask. Always one mask.

:func:`use_authors_decoder` installs it on a built or loaded ``SamHQModel``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.models.sam_hq.modeling_sam_hq import SamHQMaskDecoder

__all__ = ["SamHQDecoder", "use_authors_decoder"]


class SamHQDecoder(SamHQMaskDecoder):
    """``SamHQMaskDecoder`` with the authors' forward pass (see the module docstring)."""

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_positional_embeddings: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor | None,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        hq_token_only: bool,
        intermediate_embeddings: list[torch.Tensor] | None = None,
        attention_similarity: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks and scores for ``P`` prompts on each of ``B`` images.

        Args:
            image_embeddings: float ``[B, C, H, W]`` (``C`` = 256, ``H`` = ``W`` = 64 for the released models).
            image_positional_embeddings: float ``[B, C, H, W]``.
            sparse_prompt_embeddings: float ``[B, P, T, C]`` point/box tokens, or ``None``.
            dense_prompt_embeddings: float ``[B * P or 1, C, H, W]`` mask-prompt (or no-mask) embeddings.
            multimask_output: pick the best of SAM's three multimask masks instead of its single-mask output.
            hq_token_only: return the HQ mask alone instead of SAM's mask plus the HQ mask.
            intermediate_embeddings: ``[first global ViT block output [B, H, W, vit_dim], ...]``; only the first is
                used. Required: SAM-HQ's masks depend on it.
            attention_similarity, target_embedding: passed to the two-way transformer as transformers does.

        Returns:
            ``(masks [B, P, 1, 4H, 4W], iou_scores [B, P, 1])``, low-resolution logits and predicted IoU.
        """
        if not intermediate_embeddings:
            raise ValueError("SAM-HQ's decoder needs the early ViT feature (intermediate_embeddings)")
        batch, channels, height, width = image_embeddings.shape
        prompts = 1 if sparse_prompt_embeddings is None else sparse_prompt_embeddings.shape[1]
        act = self.activation

        early = intermediate_embeddings[0].permute(0, 3, 1, 2)
        hq_features = self.encoder_conv2(act(self.encoder_norm(self.encoder_conv1(image_embeddings))))
        hq_features = hq_features + self.compress_vit_conv2(act(self.compress_vit_norm(self.compress_vit_conv1(early))))

        weights = self.iou_token.weight
        tokens = torch.cat([weights, self.mask_tokens.weight, self.hq_token.weight], dim=0).repeat(batch, prompts, 1, 1)
        if sparse_prompt_embeddings is not None:
            tokens = torch.cat([tokens, sparse_prompt_embeddings], dim=2)
        tokens = tokens.to(weights.dtype)
        source = (image_embeddings + dense_prompt_embeddings).repeat_interleave(prompts, 0)
        position = image_positional_embeddings.repeat_interleave(prompts, 0)
        queries, keys = self.transformer(
            point_embeddings=tokens,
            image_embeddings=source,
            image_positional_embeddings=position,
            attention_similarity=attention_similarity,
            target_embedding=target_embedding,
        )

        # keys: [B * P, 1, H * W, C] → [B * P, C, H, W] → 4× upsampled [B * P, C / 8, 4H, 4W]
        grid = keys.transpose(2, 3).reshape(batch * prompts, channels, height, width)
        upscaled = act(self.upscale_conv2(act(self.upscale_layer_norm(self.upscale_conv1(grid)))))
        refined = self.mask_conv2(act(self.mask_norm(self.mask_conv1(upscaled))))
        refined = refined + hq_features.repeat_interleave(prompts, 0)

        mlps = [*self.output_hypernetworks_mlps, self.hq_mask_mlp]
        hyper = torch.stack([mlp(queries[:, :, 1 + i]) for i, mlp in enumerate(mlps)], dim=2)  # [B, P, 5, C / 8]
        depth, up_h, up_w = upscaled.shape[1:]
        flat = upscaled.reshape(batch, prompts, depth, up_h * up_w)
        sam_masks = (hyper[:, :, :-1] @ flat).reshape(batch, prompts, -1, up_h, up_w)
        flat_hq = refined.reshape(batch, prompts, depth, up_h * up_w)
        hq_mask = (hyper[:, :, -1:] @ flat_hq).reshape(batch, prompts, 1, up_h, up_w)

        scores = self.iou_prediction_head(queries[:, :, 0])  # [B, P, 4]
        if multimask_output:
            best_score, best = scores[:, :, 1:].max(dim=2, keepdim=True)
            index = (best + 1)[..., None, None].expand(-1, -1, -1, up_h, up_w)
            sam_mask = torch.gather(sam_masks, 2, index)
            scores = best_score
        else:
            sam_mask, scores = sam_masks[:, :, :1], scores[:, :, :1]
        return (hq_mask if hq_token_only else sam_mask + hq_mask), scores


def use_authors_decoder(model: Any) -> Any:
    """Give a transformers ``SamHQModel`` the authors' decoder pass; parameters and buffers stay as they are."""
    model.mask_decoder.__class__ = SamHQDecoder
    return model
