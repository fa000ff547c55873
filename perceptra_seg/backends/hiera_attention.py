"""SAM 2's Hiera block attention without the attention matrix transformers computes and discards.

transformers' ``Sam2MultiScaleAttention.forward`` first takes ``softmax(q·kᵀ)`` over every window (a result it never
reads) and then runs the configured attention function. :func:`trim_hiera_attention` replaces the ``forward`` of
those module *instances* (transformers' classes stay untouched) with one that runs only the real attention, with the
same operations in the same order, so every output is bit-identical. Used by the image backend
(:class:`~perceptra_seg.backends.torch_backend.TorchBackend`) and by video tracking
(:mod:`perceptra_seg.video.speedups`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["multiscale_attention_forward", "trim_hiera_attention"]


def multiscale_attention_forward(module: Any) -> Callable[..., torch.Tensor]:
    """Hiera block attention without the discarded ``softmax(q·kᵀ)``: query/key/value projection, query pooling at
    stage changes, transformers' configured attention function, output projection (as transformers' forward)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.sam2.modeling_sam2 import do_pool, eager_attention_forward

    def forward(hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        batch_size, height, width, _ = hidden_states.shape  # [B, H, W, C]
        qkv = module.qkv(hidden_states).reshape(batch_size, height * width, 3, module.num_attention_heads, -1)
        query, key, value = torch.unbind(qkv, 2)  # [B, H*W, heads, C']
        if module.query_stride:
            query = do_pool(query.reshape(batch_size, height, width, -1), module.query_stride)
            height, width = query.shape[1:3]
            query = query.reshape(batch_size, height * width, module.num_attention_heads, -1)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager_attention_forward)
        output, _ = attention(
            module,
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            attention_mask=None,
            is_causal=module.is_causal,
            scaling=module.scale,
            **kwargs,
        )
        return module.proj(output.reshape(batch_size, height, width, -1))

    return forward


def trim_hiera_attention(model: torch.nn.Module) -> int:
    """Install :func:`multiscale_attention_forward` on every Hiera attention module of ``model`` (a ``Sam2Model`` or
    ``Sam2VideoModel``; models without Hiera blocks are left alone). Returns how many modules were changed;
    installing twice changes nothing."""
    from transformers.models.sam2.modeling_sam2 import Sam2MultiScaleAttention

    changed = 0
    for module in model.modules():
        if isinstance(module, Sam2MultiScaleAttention) and not getattr(module, "_perceptra_speedup", False):
            module.forward = multiscale_attention_forward(module)  # type: ignore[method-assign]
            setattr(module, "_perceptra_speedup", True)  # noqa: B010 (nn.Module's __setattr__ is typed for tensors)
            changed += 1
    return changed
