"""Per-frame work the tracking model repeats with identical inputs, done once: installed on a loaded model's modules.

transformers' ``Sam2VideoModel`` recomputes, on every tracked frame, values that depend only on a tensor's shape,
and its image encoder computes an attention matrix it never reads. :func:`install_speedups` replaces bound
methods (``forward``, ``_get_pos_embed``) of those module *instances* (transformers' classes and code stay untouched):

* sine position tables (``Sam2SinePositionEmbedding`` of the image encoder's neck, ``Sam2VideoPositionEmbeddingSine``
  of the memory encoder): kept per ``(shape, device, dtype)``. transformers caches only the last shape, and the
  neck asks for four shapes per frame in turn (the 256×256 level alone is a ``[1, 256, 256, 256]`` float32 table);
* the Hiera trunk's position embedding (``Sam2HieraDetModel._get_pos_embed``: a bicubic resize of the learned
  embedding to the patch grid plus the tiled window embedding, ``[1, 256, 256, 96]`` at a 1024 input for
  hiera_tiny): kept per grid and weights;
* the memory attention's rotary tables (``Sam2VideoVisionRotaryEmbedding``): ``cos``/``sin`` of the fixed position
  grid, kept per ``(device, grid)``;
* the memory attention's rotary attention (``Sam2VideoRoPEAttention``): the keys (``[B, heads, frames·H·W +
  pointers, D]``) are rotated with the tables broadcast over the memory frames and written straight into one key
  tensor, instead of transformers' repeated tables, stacked pairs and concatenation (same arithmetic);
* the Hiera blocks' attention (``Sam2MultiScaleAttention``): transformers' forward first multiplies every query with
  every key and takes a softmax whose result it discards, then runs the real attention; the replacement runs only
  the real attention, with the same operations in the same order.

Each replacement returns the same values (bit for bit) as the method it stands in for; the cached tables are
computed by the original methods. ``tests/video/test_speedups.py`` checks both on a reduced model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..backends.hiera_attention import multiscale_attention_forward

__all__ = ["install_speedups"]

_MAX_TABLES = 16  # distinct shapes kept per module (a tracking model asks for at most five)


def _cached_position_embedding(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``forward(shape, device, dtype, mask=None)`` of a sine position embedding, cached per (shape, device, dtype)
    when there is no padding mask."""
    tables: dict[tuple[Any, ...], torch.Tensor] = {}

    def forward(
        shape: torch.Size, device: torch.device | str, dtype: torch.dtype, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mask is not None:
            return original(shape, device, dtype, mask)
        key = (tuple(shape), str(torch.device(device)), dtype, torch.is_inference_mode_enabled())
        table = tables.get(key)
        if table is None:
            if len(tables) >= _MAX_TABLES:
                tables.clear()
            table = tables[key] = original(shape, device, dtype)
        return table

    return forward


def _cached_rotary(original: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> Callable[..., Any]:
    """``forward(x, position_ids)`` of the memory attention's rotary embedding (``cos``, ``sin``), cached per device
    of ``x`` and the position grid's identity and version (it is the model's fixed buffer)."""
    tables: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if position_ids.is_inference():  # an inference tensor has no version counter to key on
            return original(x, position_ids)
        key = (
            str(x.device),
            position_ids.device,
            position_ids.data_ptr(),
            tuple(position_ids.shape),
            position_ids._version,
            torch.is_inference_mode_enabled(),
        )
        pair = tables.get(key)
        if pair is None:
            if len(tables) >= _MAX_TABLES:
                tables.clear()
            pair = tables[key] = original(x, position_ids)
        return pair

    return forward


def _cached_hiera_position(module: Any, original: Callable[[tuple[int, int]], torch.Tensor]) -> Callable[..., Any]:
    """``_get_pos_embed(hw)`` of the Hiera trunk (its position embedding resized bicubically to the patch grid plus
    the tiled window embedding, ``[1, h, w, C]``), cached per grid and weights (identity and version)."""
    tables: dict[tuple[Any, ...], torch.Tensor] = {}

    def get_pos_embed(hw: tuple[int, int]) -> torch.Tensor:
        weights = (module.pos_embed, module.pos_embed_window)
        if any(w.is_inference() or (w.requires_grad and torch.is_grad_enabled()) for w in weights):
            return original(hw)
        key = (
            tuple(hw),
            *((w.device, w.dtype, w.data_ptr(), w._version) for w in weights),
            torch.is_inference_mode_enabled(),
        )
        table = tables.get(key)
        if table is None:
            if len(tables) >= _MAX_TABLES:
                tables.clear()
            table = tables[key] = original(hw)
        return table

    return get_pos_embed


def _rotated_pairs(x: torch.Tensor) -> torch.Tensor:
    """``x`` with each pair of its last dimension ``(a, b)`` turned into ``(-b, a)`` (transformers'
    ``rotate_pairwise``), written into one new tensor."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    pairs, source = out.view(*x.shape[:-1], -1, 2), x.view(*x.shape[:-1], -1, 2)
    torch.neg(source[..., 1], out=pairs[..., 0])
    pairs[..., 1].copy_(source[..., 0])
    return out


def _rope_attention_forward(module: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    """The memory attention's rotary attention with the keys' rotation done in place of transformers' copies.

    transformers repeats the ``cos``/``sin`` tables once per memory frame, stacks the rotated keys and concatenates
    the rotated part with the object-pointer tokens left unrotated; here the tables are broadcast over the memory
    frames and the rotated keys are written straight into the key tensor. The arithmetic is the same
    (``x·cos + rotate(x)·sin`` element by element, in float32); other dtypes run transformers' forward.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.sam2_video.modeling_sam2_video import eager_attention_forward

    def forward(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        num_k_exclude_rope: int = 0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        cos, sin = position_embeddings  # [1, Lq, D] float32
        if module.training or not all(t.dtype == torch.float32 for t in (query, key, cos, sin)):
            return original(query, key, value, position_embeddings, num_k_exclude_rope, **kwargs)
        batch_size, point_batch_size = query.shape[:2]
        shape = (batch_size * point_batch_size, -1, module.num_attention_heads, module.head_dim)
        q = module.q_proj(query).view(*shape).transpose(1, 2)  # [B, heads, Lq, D]
        k = module.k_proj(key).view(*shape).transpose(1, 2)  # [B, heads, Lk, D]
        v = module.v_proj(value).view(*shape).transpose(1, 2)
        q = (q * cos) + (_rotated_pairs(q) * sin)
        rotated = k.shape[-2] - num_k_exclude_rope
        if rotated > 0:
            repeats = rotated // q.shape[-2] if module.rope_k_repeat and rotated != q.shape[-2] else 1
            if repeats * q.shape[-2] != rotated:  # transformers' shapes would not broadcast either: its error
                return original(query, key, value, position_embeddings, num_k_exclude_rope, **kwargs)
            k_rot = k[..., :rotated, :]
            keys = torch.empty(k.shape, dtype=k.dtype, device=k.device)
            turned = _rotated_pairs(k_rot)
            if repeats > 1:  # [B, heads, frames, Lq, D] against tables [1, Lq, D]
                frames = (*k_rot.shape[:-2], repeats, q.shape[-2], k_rot.shape[-1])
                k_rot, turned = k_rot.view(frames), turned.view(frames)
                target = keys[..., :rotated, :].view(frames)
            else:
                target = keys[..., :rotated, :]
            torch.add(k_rot * cos, turned.mul_(sin), out=target)
            keys[..., rotated:, :].copy_(k[..., rotated:, :])
            k = keys
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager_attention_forward)
        output, weights = attention(
            module,
            q,
            k,
            v,
            attention_mask=None,
            dropout=0.0,
            scaling=module.scaling,
            is_causal=module.is_causal,
            **kwargs,
        )
        output = output.reshape(batch_size, point_batch_size, -1, module.num_attention_heads * module.head_dim)
        return module.o_proj(output.contiguous()), weights

    return forward


def install_speedups(model: torch.nn.Module) -> int:
    """Install the cached / trimmed forwards on every matching module of ``model`` (a ``Sam2VideoModel``; other
    models' modules are left alone). Returns how many modules were changed; installing twice changes nothing."""
    from transformers.models.sam2.modeling_sam2 import (
        Sam2HieraDetModel,
        Sam2MultiScaleAttention,
        Sam2SinePositionEmbedding,
    )
    from transformers.models.sam2_video.modeling_sam2_video import (
        Sam2VideoPositionEmbeddingSine,
        Sam2VideoRoPEAttention,
        Sam2VideoVisionRotaryEmbedding,
    )

    changed = 0
    for module in model.modules():
        if getattr(module, "_perceptra_speedup", False):
            continue
        if isinstance(module, (Sam2SinePositionEmbedding, Sam2VideoPositionEmbeddingSine)):
            module.forward = _cached_position_embedding(module.forward)  # type: ignore[method-assign]
        elif isinstance(module, Sam2VideoVisionRotaryEmbedding):
            module.forward = _cached_rotary(module.forward)  # type: ignore[method-assign]
        elif isinstance(module, Sam2VideoRoPEAttention):
            module.forward = _rope_attention_forward(module, module.forward)  # type: ignore[method-assign]
        elif isinstance(module, Sam2HieraDetModel):
            module._get_pos_embed = _cached_hiera_position(module, module._get_pos_embed)  # type: ignore[method-assign]
        elif isinstance(module, Sam2MultiScaleAttention):
            module.forward = multiscale_attention_forward(module)  # type: ignore[method-assign]
        else:
            continue
        setattr(module, "_perceptra_speedup", True)  # noqa: B010 (nn.Module's __setattr__ is typed for tensors)
        changed += 1
    return changed
