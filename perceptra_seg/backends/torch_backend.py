"""PyTorch runtime: transformers' ``SamModel`` / ``Sam2Model`` / ``SamHQModel`` behind the encode/decode protocol."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..config import SegmentorConfig
from ..conversion import (
    convert_mobile_sam_state_dict,
    convert_sam_hq_state_dict,
    convert_state_dict,
    detect_architecture,
    detect_family,
    unwrap_checkpoint,
)
from ..exceptions import BackendError, ConfigError, InvalidInputError, ModelLoadError
from ..extras import install_command
from ..preprocessing import preprocess_image
from ..registry import Architecture, ModelSpec, architecture_config, get_model_spec
from ..weights import CheckpointSource, resolve_configured_checkpoint, transformers_model_dir
from .base import Backend, DecoderOutput, Family, ImageEmbedding, PromptBatch
from .hiera_attention import trim_hiera_attention
from .oom import oom_guard
from .precision import resolve_torch_precision, warn_if_emulated

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"the torch backend needs PyTorch and transformers: {install_command('torch')}") from exc

__all__ = ["TorchBackend", "build_model", "resolve_device"]

logger = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(requested: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an explicit CUDA device without CUDA is an error."""
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        logger.info("device auto-selected: %s", device)
        return device
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} requested but CUDA is not available (use device='cpu' or 'auto')")
    return torch.device(requested)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


_STUB_VIT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 1, "global_attn_indexes": [0]}


def build_model(family: Family, architecture: dict[str, Any], network: Architecture = "sam") -> torch.nn.Module:
    """An untrained transformers SAM model; ``architecture`` holds ``SamConfig``/``Sam2Config``/``SamHQConfig``
    keyword arguments. ``network="sam_hq"`` builds ``SamHQModel``, whose decoder's ``vit_dim`` follows the ViT width
    unless ``architecture`` sets it. A ``tiny_vit`` key (MobileSAM, SAM-HQ ``vit_tiny``) puts our TinyViT
    (:mod:`~perceptra_seg.backends.tiny_vit`, that key's ``TinyViTConfig`` overrides) in place of the ViT."""
    from transformers import Sam2Config, Sam2Model, SamConfig, SamHQConfig, SamHQModel, SamModel

    if network == "edgetam":  # EdgeTamModel with our RepViT trunk (see backends/edgetam.py)
        from .edgetam import build_edgetam

        return build_edgetam(architecture)
    if "tiny_vit" in architecture:  # MobileSAM, SAM-HQ vit_tiny: our TinyViT as the vision encoder
        from .tiny_vit import TinyViTConfig, TinyViTEncoder

        tiny: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in architecture["tiny_vit"].items()}
        try:
            encoder_config = TinyViTConfig(**tiny, return_intermediate=network == "sam_hq")
        except TypeError as exc:
            raise ConfigError(f"model.architecture.tiny_vit: {exc}") from None
        sam_kwargs = {k: v for k, v in architecture.items() if k != "tiny_vit"}
        # a one-block ViT stands in while the model is built, then TinyViT replaces it (never read again)
        sam_kwargs["vision_config"] = _STUB_VIT
        if network == "sam_hq":
            from .sam_hq import use_authors_decoder

            decoder = {"vit_dim": encoder_config.embed_dims[2], **architecture.get("mask_decoder_config", {})}
            model: Any = use_authors_decoder(SamHQModel(SamHQConfig(**{**sam_kwargs, "mask_decoder_config": decoder})))
        else:
            model = SamModel(SamConfig(**sam_kwargs))
        model.vision_encoder = TinyViTEncoder(encoder_config)
        return cast(torch.nn.Module, model)
    if network == "sam_hq":
        from .sam_hq import use_authors_decoder

        width = architecture.get("vision_config", {}).get("hidden_size", 768)
        decoder = {"vit_dim": width, **architecture.get("mask_decoder_config", {})}
        return use_authors_decoder(SamHQModel(SamHQConfig(**{**architecture, "mask_decoder_config": decoder})))
    if family == "sam1":
        return SamModel(SamConfig(**architecture))
    return Sam2Model(Sam2Config(**architecture))


def _load_meta_file(path: Path, spec: ModelSpec, overrides: dict[str, Any] | None) -> torch.nn.Module:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state_dict = unwrap_checkpoint(raw)
        family = detect_family(state_dict)
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc} (truncated or not a SAM checkpoint?)") from None
    network = detect_architecture(state_dict)
    if family != spec.family or network != spec.architecture:
        names = {"sam_hq": "SAM-HQ", "mobile_sam": "MobileSAM", "edgetam": "EdgeTAM"}
        found = names.get(network, family.upper())
        wanted = names.get(spec.architecture, spec.family.upper())
        raise ModelLoadError(
            f"checkpoint {path.name} holds a {found} model but model {spec.name!r} is a {wanted}"
            " model; set model.name to match the file"
        )
    architecture = _deep_merge(architecture_config(family, spec.variant, network), overrides or {})
    model = build_model(family, architecture, network)
    if network == "sam_hq" and "tiny_vit" in architecture:
        converted = convert_sam_hq_state_dict(state_dict, tiny_vit=True)
    elif network == "sam_hq":
        converted = convert_sam_hq_state_dict(state_dict)
    elif network == "mobile_sam":
        converted = convert_mobile_sam_state_dict(state_dict)
    elif network == "edgetam":
        from ..conversion_edgetam import convert_edgetam_state_dict

        converted = convert_edgetam_state_dict(state_dict)
    else:
        converted = convert_state_dict(state_dict, family)
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"checkpoint {path.name} does not fit {spec.name}/{spec.variant}: {exc}".replace("\n", " ")
        ) from None
    return model


def _load_transformers(location: str, spec: ModelSpec, *, hub: bool) -> torch.nn.Module:
    from transformers import Sam2Model, SamHQModel, SamModel

    if spec.architecture == "mobile_sam":
        raise ModelLoadError(
            f"{location}: MobileSAM loads from the authors' file (mobile_sam.pt) only; transformers has no MobileSAM"
        )
    if spec.architecture == "edgetam":
        raise ModelLoadError(
            f"{location}: EdgeTAM loads from the authors' file (edgetam.pt) only; transformers' EdgeTAM models need "
            "timm for their trunk"
        )
    directory, model_type = transformers_model_dir(location, hub=hub)
    classes: dict[str, tuple[Family, Any]] = {
        "sam": ("sam1", SamModel),
        "sam2": ("sam2", Sam2Model),
        "sam_hq": ("sam1", SamHQModel),
        "sam2_video": ("sam2", Sam2Model),  # SAM 2 video checkpoints (hub repos) hold the image model too
    }
    if model_type not in classes:
        raise ModelLoadError(f"{location} is a {model_type!r} model, not SAM (sam), SAM 2 (sam2) or SAM-HQ (sam_hq)")
    family, cls = classes[model_type]
    if (model_type == "sam_hq") != (spec.architecture == "sam_hq"):
        wanted = "a 'sam_hq'" if spec.architecture == "sam_hq" else "a 'sam' or 'sam2'"
        raise ModelLoadError(f"{location} holds a {model_type!r} model but model {spec.name!r} needs {wanted} one")
    if family != spec.family:
        raise ModelLoadError(
            f"{location} holds a {family.upper()} model but model {spec.name!r} is {spec.family.upper()}"
        )
    try:
        model: torch.nn.Module = cls.from_pretrained(directory)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load {location}: {exc}") from None
    if model_type == "sam_hq":
        from .sam_hq import use_authors_decoder

        use_authors_decoder(model)
    return model


def _row(batch: PromptBatch, index: int) -> PromptBatch:
    """Prompt ``index`` of a batch as a batch of one."""
    pick = slice(index, index + 1)
    return PromptBatch(
        points=None if batch.points is None else batch.points[pick],
        labels=None if batch.labels is None else batch.labels[pick],
        boxes=None if batch.boxes is None else batch.boxes[pick],
        mask_inputs=None if batch.mask_inputs is None else batch.mask_inputs[pick],
    )


class TorchBackend(Backend):
    """Encode/decode with a transformers SAM model on CPU or CUDA, fp32 or autocast fp16/bf16.

    ``runtime.precision: auto`` is resolved here (:func:`~perceptra_seg.backends.precision.resolve_torch_precision`);
    :attr:`precision`, ``info()`` and the fingerprint hold the resolved value.
    """

    def __init__(self, config: SegmentorConfig) -> None:
        self._config = config
        self.spec = get_model_spec(config.model.name, config.model.variant)
        self.family: Family = self.spec.family
        self._hq_token_only = config.model.hq_token_only
        runtime = config.runtime
        self.device = resolve_device(runtime.device)
        self.precision = resolve_torch_precision(
            runtime.precision,
            device_type=self.device.type,
            family=self.family,
            variant=self.spec.precision_key,
            custom_architecture=bool(config.model.architecture),
            cuda_capability=torch.cuda.get_device_capability(self.device) if self.device.type == "cuda" else None,
        )
        if runtime.precision == "auto":
            logger.info("precision auto-selected: %s (device %s)", self.precision, self.device)
        warn_if_emulated(self.precision, self.device.type)
        if runtime.num_threads is not None:
            torch.set_num_threads(runtime.num_threads)
        self.source: CheckpointSource = resolve_configured_checkpoint(self.spec, config.model)
        if self.source.kind == "meta":
            model = _load_meta_file(Path(self.source.location), self.spec, config.model.architecture)
        else:
            model = _load_transformers(self.source.location, self.spec, hub=self.source.kind == "hub")
        self.model: Any = cast(Any, model.to(self.device).eval())
        trim_hiera_attention(self.model)  # SAM 2's encoder without the attention matrix transformers discards
        self._closed = False
        prompt_config = self.model.config.prompt_encoder_config
        self.mask_size = 4 * (int(prompt_config.image_size) // int(prompt_config.patch_size))
        self._encoder: Callable[[torch.Tensor], Any] = self.model.get_image_embeddings
        if runtime.compile:
            self._encoder = torch.compile(self.model.get_image_embeddings)
        self.fingerprint = "|".join(
            (self.spec.name, self.spec.variant, "torch", str(self.device), self.precision, self.source.fingerprint)
        )
        logger.info(
            "loaded %s/%s from %s (%s) on %s, precision %s",
            self.spec.name,
            self.spec.variant,
            self.source.location,
            self.source.kind,
            self.device,
            self.precision,
        )

    def info(self) -> dict[str, Any]:
        return {
            "model": self.spec.name,
            "variant": self.spec.variant,
            "backend": "torch",
            "device": str(self.device),
            "precision": self.precision,
            "checkpoint": self.source.fingerprint,
        }

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.precision == "fp32":
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision]):
                    yield

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self._check_open()
        pixels, input_size = preprocess_image(image, self.family)
        features = self._encode_features(pixels)
        nbytes = sum(f.numel() * f.element_size() for f in features)
        return ImageEmbedding(original_size=image.shape[:2], input_size=input_size, features=features, nbytes=nbytes)

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """Encode B RGB uint8 ``[H, W, 3]`` images (sizes may differ) in one encoder run (``runtime.max_batch_size``).

        Each image is preprocessed alone into the same ``[1, 3, 1024, 1024]`` input as :meth:`encode`; the B inputs
        run as one ``[B, 3, 1024, 1024]`` batch and every embedding gets its own copy of its row of the features
        (so the cache's byte count is that image's). One image takes exactly the :meth:`encode` path; larger batches
        agree with it up to float rounding (batched matrix products sum in another order).
        """
        if len(images) == 1:
            return [self.encode(images[0])]
        self._check_open()
        prepared = [preprocess_image(image, self.family) for image in images]
        batched = self._encode_features(np.concatenate([pixels for pixels, _ in prepared]))
        embeddings = []
        for index, (image, (_, input_size)) in enumerate(zip(images, prepared, strict=True)):
            features = tuple(f[index : index + 1].clone() for f in batched)
            nbytes = sum(f.numel() * f.element_size() for f in features)
            embeddings.append(
                ImageEmbedding(original_size=image.shape[:2], input_size=input_size, features=features, nbytes=nbytes)
            )
        return embeddings

    def _encode_features(self, pixels: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The encoder's float32 features of float32 ``[B, 3, 1024, 1024]`` inputs, each with a leading ``B``."""
        with oom_guard("while encoding"), self._inference():
            output = self._encoder(torch.from_numpy(pixels).to(self.device))
        if self.spec.architecture == "sam_hq":
            # (embedding [B, 256, 64, 64], the first global-attention block's output [B, 64, 64, width]): SAM-HQ's
            # decoder fuses only that early ViT feature, so the later blocks' outputs are not kept.
            output = (output[0], output[1][0])
        features = tuple(output) if isinstance(output, (list, tuple)) else (output,)
        return tuple(f.float() for f in features)

    def encode_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run the image encoder on B preprocessed images at once (the Triton server's batched encoder).

        Args:
            pixels: float32 ``[B, 3, 1024, 1024]``: outputs of :func:`~perceptra_seg.preprocessing.preprocess_image`
                stacked along the first axis.

        Returns:
            The features as float32 numpy arrays with a leading ``B``, in the order :meth:`encode` keeps them.
        """
        self._check_open()
        with oom_guard("while encoding"), self._inference():
            output = self._encoder(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device))
        features = tuple(output) if isinstance(output, (list, tuple)) else (output,)
        return tuple(f.float().cpu().numpy() for f in features)

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        self._check_open()
        if len(batch) == 0:
            raise InvalidInputError("empty prompt batch")
        if batch.mask_inputs is not None and len(batch) > 1:
            # transformers' mask decoder broadcasts N dense (mask) embeddings against N prompts into N×N; answer
            # prompts that carry a mask one at a time instead (the decoder is the cheap part).
            rows = [self.decode(embedding, _row(batch, i), multimask=multimask) for i in range(len(batch))]
            return DecoderOutput(
                low_res_logits=np.concatenate([r.low_res_logits for r in rows]),
                iou_scores=np.concatenate([r.iou_scores for r in rows]),
            )
        features = embedding.features
        kwargs: dict[str, Any] = {
            "image_embeddings": features[0] if self.family == "sam1" else list(features),
            "multimask_output": multimask,
        }
        if self.spec.architecture == "sam_hq":
            kwargs["intermediate_embeddings"] = [features[1]]
            kwargs["hq_token_only"] = self._hq_token_only
        if batch.points is not None and batch.labels is not None:
            kwargs["input_points"] = self._tensor(batch.points)[None]
            kwargs["input_labels"] = torch.from_numpy(batch.labels).to(self.device, torch.long)[None]
        if batch.boxes is not None:
            kwargs["input_boxes"] = self._tensor(batch.boxes)[None]
        if batch.mask_inputs is not None:
            kwargs["input_masks"] = self._tensor(batch.mask_inputs)
        try:
            with oom_guard("while decoding"), self._inference():
                output = self.model(**kwargs)
        except RuntimeError as exc:
            raise BackendError(f"mask decoder failed: {exc}") from exc
        logits = output.pred_masks[0].float().cpu().numpy()
        scores = output.iou_scores[0].float().cpu().numpy()
        return DecoderOutput(low_res_logits=logits, iou_scores=scores)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def close(self) -> None:
        """Drop the model and free its device memory; ``encode``/``decode`` then raise :class:`BackendError`."""
        if self._closed:
            return
        self._closed = True
        self.model.to("cpu")
        self.model = None
        self._encoder = _closed
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the torch backend is closed")


def _closed(*_: Any) -> Any:
    raise BackendError("the torch backend is closed")
