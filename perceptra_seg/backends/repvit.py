"""EdgeTAM's image trunk: RepViT-M1, laid out as the authors' ``edgetam.pt`` stores it.

transformers' ``EdgeTamModel`` gets this trunk from timm (``TimmWrapperModel`` around ``repvit_m1`` with
``features_only=True``). timm imports torchvision when it is imported, and nothing we ship may import torchvision
(there is no CPU build of it here), so this module is our own RepViT. It replaces only the trunk: the FPN neck,
prompt encoder, mask decoder and memory modules stay transformers' (see :mod:`perceptra_seg.backends.edgetam`).

Parameter names equal timm's feature-extractor names, which the authors' file holds under
``image_encoder.trunk.body.`` and transformers under ``vision_encoder.backbone.timm_model.``:
``stem.conv{1,2}``, then ``stages_0`` … ``stages_3`` (timm flattens its ``stages`` Sequential into ``stages_N``),
each with an optional ``downsample`` and ``blocks.K``. Every convolution is bias-free and followed by batch norm
(``c`` / ``bn``), as in the unfused (training-time) RepViT.

Shapes for the released model (``embed_dims`` 48 / 96 / 192 / 384, input ``[B, 3, 1024, 1024]``): the stem
(two stride-2 3×3 convolutions) gives ``[B, 48, 256, 256]``; stages 1–3 each halve the resolution, so the four
outputs are ``[B, 48, 256, 256]``, ``[B, 96, 128, 128]``, ``[B, 192, 64, 64]``, ``[B, 384, 32, 32]`` (NCHW).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["RepViT", "RepViTBackbone", "RepViTConfig", "RepViTOutput"]


@dataclass(frozen=True)
class RepViTConfig:
    """Architecture of a RepViT trunk (defaults: RepViT-M1, EdgeTAM's).

    Attributes:
        embed_dims: channels of the four stages.
        depths: blocks per stage (a stage after the first also has a downsampling block before them).
        mlp_ratio: hidden width of the channel mixers, as a multiple of the stage width.
        kernel_size: side of the depthwise token-mixing and downsampling convolutions.
    """

    embed_dims: tuple[int, ...] = (48, 96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 14, 2)
    mlp_ratio: int = 2
    kernel_size: int = 3

    def __post_init__(self) -> None:
        if len(self.embed_dims) != len(self.depths) or not self.depths:
            raise ValueError("embed_dims and depths must name the same (non-zero) number of stages")
        if self.kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd")


class ConvNorm(nn.Sequential):
    """Bias-free convolution ``c`` then ``bn`` (batch norm with its running statistics at inference)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module(
            "c", nn.Conv2d(channels_in, channels_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        )
        self.add_module("bn", nn.BatchNorm2d(channels_out))


class TokenMixer(nn.Module):
    """RepVGG-style depthwise mixing: ``k×k`` depthwise branch + ``1×1`` depthwise branch + identity."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel, groups=dim)
        self.conv1 = ConvNorm(dim, dim, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv1(x) + x


class SqueezeExcite(nn.Module):
    """Channel gate: global average → 1×1 conv (``fc1``) → ReLU → 1×1 conv (``fc2``) → sigmoid, times ``x``.

    The hidden width is a quarter of ``dim`` rounded to the nearest multiple of 8 (at least 8), as timm computes it.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = max(8, int(dim / 4 + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class ChannelMixer(nn.Module):
    """``1×1`` ConvNorm to ``hidden`` channels, GELU, ``1×1`` ConvNorm back to ``dim``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, hidden)
        self.conv2 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(nn.functional.gelu(self.conv1(x)))


class Block(nn.Module):
    """One RepViT block on ``[B, C, H, W]``: token mixer, optional squeeze-excite, residual channel mixer."""

    def __init__(self, dim: int, mlp_ratio: int, kernel: int, *, squeeze_excite: bool) -> None:
        super().__init__()
        self.token_mixer = TokenMixer(dim, kernel)
        self.se = SqueezeExcite(dim) if squeeze_excite else nn.Identity()
        self.channel_mixer = ChannelMixer(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.channel_mixer(x)


class Downsample(nn.Module):
    """``[B, C, H, W]`` → ``[B, C', H/2, W/2]``: a block without squeeze-excite, a stride-2 depthwise ConvNorm, a
    ``1×1`` ConvNorm to ``C'`` channels, then a residual channel mixer (``ffn``)."""

    def __init__(self, dim: int, out_dim: int, mlp_ratio: int, kernel: int) -> None:
        super().__init__()
        self.pre_block = Block(dim, mlp_ratio, kernel, squeeze_excite=False)
        self.spatial_downsample = ConvNorm(dim, dim, kernel, stride=2, groups=dim)
        self.channel_downsample = ConvNorm(dim, out_dim)
        self.ffn = ChannelMixer(out_dim, out_dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class Stem(nn.Module):
    """``[B, 3, S, S]`` → ``[B, dim, S/4, S/4]``: two stride-2 ``3×3`` ConvNorm with GELU between them."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, dim // 2, 3, stride=2)
        self.conv2 = ConvNorm(dim // 2, dim, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(nn.functional.gelu(self.conv1(x)))


class Stage(nn.Module):
    """A downsampling block (every stage but the first) then ``depth`` blocks; squeeze-excite on every other one,
    starting with the first."""

    def __init__(self, dim: int, out_dim: int, depth: int, mlp_ratio: int, kernel: int, *, first: bool) -> None:
        super().__init__()
        self.downsample: nn.Module = nn.Identity() if first else Downsample(dim, out_dim, mlp_ratio, kernel)
        self.blocks = nn.Sequential(
            *(Block(out_dim, mlp_ratio, kernel, squeeze_excite=k % 2 == 0) for k in range(depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class RepViT(nn.Module):
    """The RepViT trunk without its classification head: ``[B, 3, S, S]`` → one NCHW map per stage."""

    def __init__(self, config: RepViTConfig) -> None:
        super().__init__()
        dims = config.embed_dims
        self.stem = Stem(dims[0])
        self.stage_names: list[str] = []
        for index, (depth, dim) in enumerate(zip(config.depths, dims, strict=True)):
            name = f"stages_{index}"
            stage = Stage(dims[max(index - 1, 0)], dim, depth, config.mlp_ratio, config.kernel_size, first=index == 0)
            self.add_module(name, stage)
            self.stage_names.append(name)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(pixel_values)
        features = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            features.append(x)
        return features


@dataclass
class RepViTOutput:
    """What transformers' ``EdgeTamVisionModel`` reads from its backbone: ``last_hidden_state`` is the list of
    per-stage NCHW maps (highest resolution first); ``hidden_states`` is always ``None``."""

    last_hidden_state: list[torch.Tensor]
    hidden_states: tuple[torch.Tensor, ...] | None = field(default=None)


class RepViTBackbone(nn.Module):
    """Stands where ``EdgeTamVisionModel.backbone`` (timm's wrapper) stands, with the same parameter names.

    The trunk sits under ``timm_model`` so that a state dict converted for transformers' own EdgeTAM loads into
    ours unchanged, and ours into theirs.
    """

    def __init__(self, config: RepViTConfig) -> None:
        super().__init__()
        self.config = config
        self.timm_model = RepViT(config)

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> RepViTOutput:
        """``pixel_values`` float ``[B, 3, S, S]`` → :class:`RepViTOutput`. Extra keyword arguments that
        transformers passes to any backbone (output flags) are accepted; this trunk records no attentions."""
        weight = next(self.timm_model.parameters())
        return RepViTOutput(
            last_hidden_state=self.timm_model(pixel_values.to(device=weight.device, dtype=weight.dtype))
        )
