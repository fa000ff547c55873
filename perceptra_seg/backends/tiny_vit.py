"""MobileSAM's image encoder: a TinyViT trunk plus SAM's neck, laid out as the authors' ``mobile_sam.pt`` holds it.

transformers has no TinyViT, and timm's (``timm.models.tiny_vit``) names its modules differently (``stages``,
``conv1.conv``), keeps stride 2 in every downsampling step and has no SAM neck, so it cannot load the authors' file
as it is. This module is only the encoder; MobileSAM's prompt encoder and mask decoder are transformers' ``SamModel``
parts (see :func:`build_mobile_sam`).

Shapes for the released ``vit_t`` (``embed_dims`` 64 / 128 / 160 / 320, input 1024×1024):

* patch embedding: two stride-2 3×3 convolutions → ``[B, 64, 256, 256]``;
* stage 0: MBConv blocks (inverted residual convolutions), then a merge to ``[B, 128×128, 128]`` tokens;
* stages 1–3: windowed attention blocks with a learned relative-position bias and a depthwise 3×3 convolution
  between attention and MLP; merges to 64×64 tokens of width 160, then — the last merge with stride 1, as MobileSAM
  sets it — 64×64 tokens of width 320;
* neck (SAM's): 1×1 conv to 256, LayerNorm2d, 3×3 conv, LayerNorm2d → the image embedding ``[B, 256, 64, 64]``.

Parameter names equal the authors' after their ``image_encoder.`` prefix. Their classification head (``norm_head``,
``head``) is unused by SAM and not built; the conversion drops it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TinyViTConfig", "TinyViTEncoder"]


@dataclass(frozen=True)
class TinyViTConfig:
    """Architecture of a TinyViT image encoder (defaults: MobileSAM's ``vit_t``)."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    image_size: int = 1024
    output_channels: int = 256
    #: also return stage 1's output ``[B, S/16, S/16, embed_dims[2]]`` (SAM-HQ ``vit_tiny``'s early feature)
    return_intermediate: bool = False


class ConvBN(nn.Sequential):
    """Bias-free convolution ``c`` followed by batch norm ``bn`` (inference statistics)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module(
            "c", nn.Conv2d(channels_in, channels_out, kernel, stride, kernel // 2, groups=groups, bias=False)
        )
        self.add_module("bn", nn.BatchNorm2d(channels_out))


class PatchEmbed(nn.Module):
    """``[B, 3, S, S]`` → ``[B, dim, S/4, S/4]``: two stride-2 3×3 ConvBN with GELU between them."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block on ``[B, C, H, W]``: 1×1 expand, depthwise 3×3, 1×1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """``[B, C, H, W]`` or ``[B, H*W, C]`` → ``[B, H'*W', out]`` tokens (H' = H/stride): 1×1, depthwise 3×3
    with ``stride``, 1×1 convolutions with GELU between them."""

    def __init__(self, resolution: int, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.transpose(1, 2).reshape(x.shape[0], -1, self.resolution, self.resolution)
        x = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over one ``window × window`` patch of tokens ``[B, N, C]``, with a learned bias
    per head and per (|dy|, |dx|) offset between the two tokens (``attention_biases[heads, offsets]``)."""

    attention_bias_idxs: torch.Tensor

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        cells = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        index = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in cells for b in cells]
        self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(index).view(len(cells), len(cells)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(batch, tokens, self.heads, -1).split(self.head_dim, dim=3)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(batch, tokens, -1))


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear on ``[B, N, C]``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (bottom/right zero padding to whole windows), depthwise conv, MLP on ``[B, H*W, C]``."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, mlp_ratio: float, local_conv: int) -> None:
        super().__init__()
        self.resolution, self.window = resolution, window
        self.attn = Attention(dim, heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        side, win = self.resolution, self.window
        if side == win:
            attended = self.attn(x)
        else:
            pad = (win - side % win) % win
            grid = F.pad(x.view(batch, side, side, dim), (0, 0, 0, pad, 0, pad))
            cells = (side + pad) // win
            windows = grid.view(batch, cells, win, cells, win, dim).transpose(2, 3).reshape(-1, win * win, dim)
            out = self.attn(windows).view(batch, cells, cells, win, win, dim).transpose(2, 3)
            attended = out.reshape(batch, side + pad, side + pad, dim)[:, :side, :side].reshape(batch, tokens, dim)
        x = x + attended
        x = self.local_conv(x.transpose(1, 2).reshape(batch, dim, side, side)).view(batch, dim, tokens).transpose(1, 2)
        return x + self.mlp(x)


class Stage(nn.Module):
    """``blocks`` then an optional ``downsample`` (a :class:`PatchMerging`)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of ``[B, C, H, W]`` (eps 1e-6)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - mean) / torch.sqrt(var + 1e-6)) + self.bias[:, None, None]


class TinyViTEncoder(nn.Module):
    """``pixel_values [B, 3, S, S]`` (normalised, padded; S = ``image_size``) → ``([B, 256, S/16, S/16],)``.

    Returns a one-element tuple so that ``SamModel.get_image_embeddings`` (which takes element 0 of its vision
    encoder's output) works unchanged; with ``return_intermediate``, ``(embedding, [early feature])`` as
    ``SamHQModel.get_image_embeddings`` expects (the early feature: stage 1's output, channels last).
    """

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__()
        dims, count = config.embed_dims, len(config.embed_dims)
        self.grid = config.image_size // 16
        self.return_intermediate = config.return_intermediate
        self.patch_embed = PatchEmbed(dims[0])
        side = config.image_size // 4
        stages: list[nn.Module] = []
        for i in range(count):
            last = i == count - 1
            # every merge halves the grid except the last one (stride 1), so the output grid is S/16
            merge = None if last else PatchMerging(side, dims[i], dims[i + 1], 1 if i == count - 2 else 2)
            if i == 0:
                blocks: list[nn.Module] = [MBConv(dims[0], config.mbconv_expand_ratio) for _ in range(config.depths[0])]
            else:
                blocks = [
                    TinyViTBlock(
                        dims[i],
                        side,
                        config.num_heads[i],
                        config.window_sizes[i],
                        config.mlp_ratio,
                        config.local_conv_size,
                    )
                    for _ in range(config.depths[i])
                ]
            stages.append(Stage(blocks, merge))
            side = side if last or i == count - 2 else side // 2
        self.layers = nn.ModuleList(stages)
        out = config.output_channels
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out, 1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, 3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> tuple[Any, ...]:
        x = self.patch_embed(pixel_values)
        early: list[torch.Tensor] = []
        for index, stage in enumerate(self.layers):
            x = stage(x)
            if index == 1:
                early.append(x.view(x.shape[0], self.grid, self.grid, -1))
        batch, _, dim = x.shape
        embedding = self.neck(x.view(batch, self.grid, self.grid, dim).permute(0, 3, 1, 2))
        return (embedding, early) if self.return_intermediate else (embedding,)
