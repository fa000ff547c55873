"""Build transformers' EdgeTAM models (``EdgeTamModel`` for images, ``EdgeTamVideoModel`` for tracking) with our
RepViT trunk (:mod:`~perceptra_seg.backends.repvit`) instead of timm's.

transformers builds the trunk with ``AutoModel`` from a timm-wrapper config, which needs timm (and so torchvision).
:func:`build_edgetam` builds the model around a throw-away one-block ResNet trunk, puts our
:class:`~perceptra_seg.backends.repvit.RepViTBackbone` in its place (same parameter names as timm's wrapper), and
sets the model's ``backbone_config`` back to the timm-wrapper description of that RepViT, so that
``save_pretrained`` writes a config transformers itself can load when timm is installed. The FPN neck, prompt
encoder, mask decoder and memory modules are transformers' own.
"""

from __future__ import annotations

from typing import Any

import torch

from ..exceptions import ConfigError
from .repvit import RepViTBackbone, RepViTConfig

__all__ = ["build_edgetam", "repvit_config"]

# What transformers builds first and we replace at once: the smallest ResNet it knows.
_PLACEHOLDER_TRUNK = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8], "depths": [1]}


def repvit_config(architecture: dict[str, Any]) -> RepViTConfig:
    """The trunk's :class:`RepViTConfig` from an architecture dict's ``repvit`` overrides.

    Raises:
        ConfigError: an unknown or invalid ``model.architecture.repvit`` field.
    """
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in architecture.get("repvit", {}).items()
    }
    try:
        return RepViTConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.architecture.repvit: {exc}") from None


def build_edgetam(architecture: dict[str, Any], *, video: bool = False) -> torch.nn.Module:
    """An untrained EdgeTAM model: ``EdgeTamModel`` (``video=False``) or ``EdgeTamVideoModel``.

    Args:
        architecture: ``EdgeTamConfig`` / ``EdgeTamVideoConfig`` keyword arguments plus ``repvit`` (trunk
            overrides). The neck's input widths (``vision_config.backbone_channel_list``) follow the trunk.

    Raises:
        ConfigError: invalid trunk or model settings.
    """
    from transformers import (
        EdgeTamConfig,
        EdgeTamModel,
        EdgeTamVideoConfig,
        EdgeTamVideoModel,
        EdgeTamVisionConfig,
        TimmWrapperConfig,
    )

    trunk = repvit_config(architecture)
    kwargs = {key: value for key, value in architecture.items() if key != "repvit"}
    config_class: Any = EdgeTamVideoConfig if video else EdgeTamConfig
    model_class: Any = EdgeTamVideoModel if video else EdgeTamModel
    try:
        # an explicit EdgeTamVisionConfig: EdgeTamVideoConfig would read a plain dict as a SAM 2 (Hiera) vision config
        vision = EdgeTamVisionConfig(
            **{
                **kwargs.get("vision_config", {}),
                "backbone_config": _PLACEHOLDER_TRUNK,
                "backbone_channel_list": list(reversed(trunk.embed_dims)),
            }
        )
        config = config_class(**{**kwargs, "vision_config": vision})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.architecture: {exc}") from None
    model: Any = model_class(config)
    model.vision_encoder.backbone = RepViTBackbone(trunk)
    model.config.vision_config.backbone_config = TimmWrapperConfig(
        architecture="repvit_m1",
        do_pooling=False,
        model_args={
            "in_chans": 3,
            "features_only": True,
            "out_indices": list(range(len(trunk.depths))),
            "embed_dim": list(trunk.embed_dims),
            "depth": list(trunk.depths),
            "mlp_ratio": trunk.mlp_ratio,
            "kernel_size": trunk.kernel_size,
        },
    )
    return model
