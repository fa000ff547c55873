"""Load transformers' ``Sam2VideoModel`` for tracking, from the same checkpoint sources as the image path.

``model.checkpoint_path`` is resolved by :func:`perceptra_seg.weights.resolve_checkpoint` exactly as for images
(Meta file, transformers directory, hub id, or ``None`` = Meta's file downloaded into the cache). A Meta file is
converted with :func:`~perceptra_seg.video.conversion.convert_video_state_dict` and loaded with ``strict=True``;
``model.architecture`` is deep-merged over the variant's architecture as for images (reduced models in tests).
EdgeTAM (``model.name: edgetam``) loads the authors' ``edgetam.pt`` into ``EdgeTamVideoModel`` the same way
(:func:`~perceptra_seg.conversion_edgetam.convert_edgetam_state_dict`, our RepViT trunk).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..backends.torch_backend import _deep_merge, resolve_device
from ..config import SegmentorConfig
from ..conversion import detect_architecture, detect_family, unwrap_checkpoint
from ..exceptions import InvalidInputError, ModelLoadError
from ..registry import ModelSpec, architecture_config, get_model_spec
from ..weights import CheckpointSource, resolve_configured_checkpoint, transformers_model_dir
from .conversion import convert_video_state_dict, video_config_flags
from .speedups import install_speedups

__all__ = ["VideoModel", "load_video_model"]

logger = logging.getLogger(__name__)


@dataclass
class VideoModel:
    """A loaded ``Sam2VideoModel`` (or ``EdgeTamVideoModel``) and what it was loaded from.

    Attributes:
        model: transformers ``Sam2VideoModel`` (``EdgeTamVideoModel`` for ``edgetam``) in eval mode on
            :attr:`device` (fp32).
        spec: catalogue entry of the configured model.
        source: where the weights came from (its fingerprint identifies them).
        device: torch device the model runs on.
        image_size: side of the square model input (1024 for Meta's models).
    """

    model: Any
    spec: ModelSpec
    source: CheckpointSource
    device: torch.device
    image_size: int

    def info(self) -> dict[str, Any]:
        """Model name, variant, backend, device, precision and checkpoint fingerprint (``model_info`` of results)."""
        return {
            "model": self.spec.name,
            "variant": self.spec.variant,
            "backend": "torch",
            "device": str(self.device),
            "precision": "fp32",
            "checkpoint": self.source.fingerprint,
        }


def _from_meta_file(path: Path, spec: ModelSpec, overrides: dict[str, Any] | None) -> Any:
    from transformers import Sam2VideoConfig, Sam2VideoModel

    try:
        state_dict = unwrap_checkpoint(torch.load(path, map_location="cpu", weights_only=True))
        family = detect_family(state_dict)
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc} (truncated or not a SAM checkpoint?)") from None
    if family != "sam2":
        raise ModelLoadError(f"checkpoint {path.name} holds a {family.upper()} model; video tracking needs SAM 2")
    network = detect_architecture(state_dict)
    if network != spec.architecture:
        raise ModelLoadError(
            f"checkpoint {path.name} holds a {network!r} network but model {spec.name!r} is {spec.architecture!r}"
            "; set model.name to match the file"
        )
    try:
        if network == "edgetam":
            from ..conversion_edgetam import convert_edgetam_state_dict

            converted = convert_edgetam_state_dict(state_dict, video=True)
        else:
            converted = convert_video_state_dict(state_dict)
    except ValueError as exc:
        raise ModelLoadError(f"checkpoint {path.name} cannot track video: {exc}") from None
    architecture = _deep_merge(
        {**architecture_config("sam2", spec.variant, spec.architecture), **video_config_flags(state_dict)},
        overrides or {},
    )
    model: Any
    if network == "edgetam":
        from ..backends.edgetam import build_edgetam

        model = build_edgetam(architecture, video=True)
    else:
        model = Sam2VideoModel(Sam2VideoConfig(**architecture))
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"checkpoint {path.name} does not fit {spec.name}/{spec.variant} (video): {exc}".replace("\n", " ")
        ) from None
    return model


def _from_transformers(location: str, *, hub: bool) -> Any:
    from transformers import Sam2VideoModel

    directory, model_type = transformers_model_dir(location, hub=hub)
    if model_type != "sam2_video":
        raise ModelLoadError(
            f"{location} is a {model_type!r} model; video tracking needs a SAM 2 video model (model_type "
            "'sam2_video', e.g. facebook/sam2.1-hiera-tiny) or Meta's checkpoint file"
        )
    try:
        return Sam2VideoModel.from_pretrained(directory)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load {location}: {exc}") from None


def load_video_model(config: SegmentorConfig) -> VideoModel:
    """Build the tracking model the config names, on ``runtime.device``, in fp32.

    Raises:
        InvalidInputError: the configured model is image-only (``sam_v1``, ``demo``).
        ModelLoadError: the weights cannot be found, read or fitted (a missing or unexpected key is named).
    """
    spec = get_model_spec(config.model.name, config.model.variant)
    if spec.family != "sam2":
        raise InvalidInputError(
            f"model {spec.name!r} segments images only; video tracking needs SAM 2 (model sam_v2 or sam_v2.0)"
            " or EdgeTAM (model edgetam)"
        )
    device = resolve_device(config.runtime.device)
    source = resolve_configured_checkpoint(spec, config.model)
    if source.kind == "meta":
        model = _from_meta_file(Path(source.location), spec, config.model.architecture)
    elif spec.architecture == "edgetam":
        raise ModelLoadError(
            f"{source.location}: EdgeTAM tracks from the authors' file (edgetam.pt) only; transformers' EdgeTAM "
            "models need timm for their trunk"
        )
    else:
        model = _from_transformers(source.location, hub=source.kind == "hub")
    model = model.to(device).eval()
    install_speedups(model)  # shape-only tables cached, the encoder's discarded attention skipped (same results)
    logger.info(
        "loaded %s/%s video model from %s (%s) on %s", spec.name, spec.variant, source.location, source.kind, device
    )
    return VideoModel(model=model, spec=spec, source=source, device=device, image_size=int(model.config.image_size))
