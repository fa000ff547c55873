"""The SAM 3 runtime: transformers' ``Sam3Model`` behind the backend protocol, plus concept detection.

``encode`` runs SAM 3's image encoder once per image (the expensive part, cached by the Segmentor like any other
embedding); :meth:`Sam3Backend.detect` answers one phrase (and/or exemplar boxes) against an embedding with the
detector head (:mod:`perceptra_seg.concepts.forward`). :meth:`Sam3Backend.decode` answers box / point prompts
with SAM 3's tracker head (:mod:`perceptra_seg.concepts.tracker`) on the same encoding: one ViT pass per image
serves both heads. The tracker comes with Meta's ``sam3.pt`` (``tracker.*`` and the detector's ``sam2_convs``
neck); a file without it, or a transformers-format ``Sam3Model`` folder, answers text and exemplar prompts only.

Weights: Meta's ``sam3.pt`` (converted, ``strict=True``), a transformers-format folder or a hub id. The text
tokenizer comes from CLIP's BPE vocabulary file (``bpe_simple_vocab_16e6.txt.gz``, looked up beside the checkpoint,
then in the checkpoint cache, else downloaded and sha256-checked) for Meta's file, and from the folder's own
tokenizer files for the transformers format.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backends.base import Backend, DecoderOutput, Family, ImageEmbedding, PromptBatch
from ..backends.oom import oom_guard
from ..backends.torch_backend import resolve_device
from ..config import SegmentorConfig
from ..conversion import unwrap_checkpoint
from ..exceptions import BackendError, ConfigError, InvalidInputError, ModelLoadError
from ..preprocessing import INPUT_SIZE
from ..registry import SAM3_VOCAB_FILE, SAM3_VOCAB_SHA256, SAM3_VOCAB_URL, architecture_config, get_model_spec
from ..weights import CheckpointSource, default_cache_dir, download_checkpoint, resolve_configured_checkpoint
from ..weights import transformers_model_dir as _model_dir
from .conversion import convert_sam3_state_dict, is_sam3_state_dict
from .forward import Detections, detect, encode_image, encode_text, preprocess
from .tokenizer import ConceptTokenizer
from .tracker import TRACKER_LEVELS, build_tracker, fill_holes, predict
from .tracker_conversion import SAM2_NECK_PREFIX, convert_tracker_state_dict, has_tracker

__all__ = ["Sam3Backend", "build_sam3_model"]

logger = logging.getLogger(__name__)

_LOGIT_CLAMP = 32.0  # Meta's predictor clips the low-resolution logits it returns to [-32, 32]

# Keys of Meta's detector that transformers' concept model has no use for: the geometry encoder's point-prompt
# projections (Meta's image processor never sends points to it) and the tracker's FPN neck (``sam2_convs``, converted
# for the tracker head and for video tracking; see perceptra_seg.video.sam3_conversion).
_UNUSED = ("geometry_encoder.points_", SAM2_NECK_PREFIX[len("detector.") :])


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        inner = merged.get(key)
        merged[key] = _deep_merge(inner, value) if isinstance(value, dict) and isinstance(inner, dict) else value
    return merged


def build_sam3_model(architecture: dict[str, Any]) -> Any:
    """An untrained ``transformers.Sam3Model`` from ``Sam3Config`` keyword arguments."""
    from transformers import Sam3Config, Sam3Model

    try:
        return Sam3Model(Sam3Config(**architecture))
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"model.architecture does not describe a SAM 3 model: {exc}") from None


def _load_meta(path: Path, overrides: dict[str, Any] | None) -> tuple[Any, Any]:
    """The concept model and, when the file carries it, the tracker sharing its ViT (else ``None``)."""
    try:
        state = unwrap_checkpoint(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc} (truncated or not a SAM 3 checkpoint?)") from None
    if not is_sam3_state_dict(state):
        raise ModelLoadError(f"checkpoint {path.name} is not a SAM 3 file (no 'detector.*' keys); set model.name")
    model = build_sam3_model(_deep_merge(architecture_config("sam3", "default", "sam3"), overrides or {}))
    converted = {k: v for k, v in convert_sam3_state_dict(state).items() if not k.startswith(_UNUSED)}
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"checkpoint {path.name} does not fit sam3: {exc}".replace("\n", " ")) from None
    if not has_tracker(state):
        logger.info("%s has no tracker weights: box and point prompts are not available", path.name)
        return model, None
    try:
        tracker = build_tracker(model, convert_tracker_state_dict(state, model.vision_encoder.backbone.state_dict()))
    except RuntimeError as exc:
        raise ModelLoadError(f"the tracker of {path.name} does not fit sam3: {exc}".replace("\n", " ")) from None
    return model, tracker


def _vocabulary(checkpoint: Path, config: SegmentorConfig) -> Path:
    """CLIP's BPE vocabulary file: beside the checkpoint, in the checkpoint cache, or downloaded there."""
    beside = checkpoint.parent / SAM3_VOCAB_FILE
    if beside.is_file():
        return beside
    directory = Path(config.model.cache_dir).expanduser() if config.model.cache_dir else default_cache_dir()
    target = directory / SAM3_VOCAB_FILE
    if target.is_file():
        return target
    if config.model.offline:
        raise ModelLoadError(f"offline and no SAM 3 tokenizer vocabulary: put {SAM3_VOCAB_FILE} at {beside}")
    return download_checkpoint(
        SAM3_VOCAB_URL, target, sha256_prefix=SAM3_VOCAB_SHA256, timeout_s=config.model.download_timeout_s
    )


class Sam3Backend(Backend):
    """SAM 3's concept model on CPU or CUDA (fp32). See the module docstring."""

    family: Family = "sam3"

    def __init__(self, config: SegmentorConfig) -> None:
        self.spec = get_model_spec(config.model.name, config.model.variant)
        if config.runtime.backend != "torch":
            raise ConfigError(f"model sam3 runs on the torch backend only, not {config.runtime.backend!r}")
        if config.runtime.precision not in ("auto", "fp32"):
            raise ConfigError(f"model sam3 runs in fp32 only, not {config.runtime.precision!r}")
        self.device = resolve_device(config.runtime.device)
        if config.runtime.num_threads is not None:  # as the torch backend: intra-op threads of this process
            torch.set_num_threads(config.runtime.num_threads)
        self.source: CheckpointSource = resolve_configured_checkpoint(self.spec, config.model)
        location = Path(self.source.location)
        if self.source.kind == "meta":
            model, tracker = _load_meta(location, config.model.architecture)
            self.tokenizer = ConceptTokenizer.from_bpe_file(_vocabulary(location, config))
        else:
            directory, model_type = _model_dir(self.source.location, hub=self.source.kind == "hub")
            if model_type not in ("sam3", "sam3_video"):
                raise ModelLoadError(f"{self.source.location} is a {model_type!r} model, not SAM 3 (sam3)")
            from transformers import Sam3Model

            tracker = None  # transformers' Sam3Model folder: the concept model only
            try:
                model = Sam3Model.from_pretrained(directory)
                self.tokenizer = ConceptTokenizer.from_pretrained(directory)
            except (OSError, ValueError, RuntimeError) as exc:
                raise ModelLoadError(f"cannot load {self.source.location}: {exc}") from None
        self.model: Any = model.to(self.device).eval()
        self.tracker: Any = None if tracker is None else tracker.to(self.device).eval()
        vision = self.model.config.vision_config
        self.resolution = int(vision.backbone_config.image_size)
        self.mask_size = int(vision.backbone_feature_sizes[0][0])
        self._concept_count = 2 * (len(vision.scale_factors) - 1)  # detector levels + their position encodings
        self.precision = "fp32"
        self.fingerprint = "|".join(
            (self.spec.name, self.spec.variant, "torch", str(self.device), "fp32", self.source.fingerprint)
        )
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._text_lock = threading.Lock()
        logger.info("loaded sam3 from %s (%s) on %s", self.source.location, self.source.kind, self.device)

    def info(self) -> dict[str, Any]:
        return {
            "model": self.spec.name,
            "variant": self.spec.variant,
            "backend": "torch",
            "device": str(self.device),
            "precision": self.precision,
            "checkpoint": self.source.fingerprint,
        }

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Run SAM 3's image encoder on an RGB uint8 ``[H, W, 3]`` image (features kept on the model's device)."""
        model = self._open()
        with oom_guard("while encoding"), torch.inference_mode():
            features = encode_image(model, preprocess(image, self.resolution).to(self.device), self.tracker)
        nbytes = sum(f.numel() * f.element_size() for f in features)
        size = (self.resolution, self.resolution)
        return ImageEmbedding(original_size=image.shape[:2], input_size=size, features=features, nbytes=nbytes)

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        """Box / point (and mask) prompts through SAM 3's tracker head, as Meta's ``predict_inst``.

        ``batch`` is in the 1024 input frame every family shares (coordinates scaled by ``1024 / W``, ``1024 / H``);
        it is rescaled to the model's ``image_size`` square (1008). As Meta's predictor: the masks are upsampled from
        the decoder's logits after hole filling (``mask_logits``, :func:`~perceptra_seg.concepts.tracker.fill_holes`),
        while the low-resolution logits returned for later ``mask_input`` use (``[N, K, S, S]``, ``S`` =
        :attr:`mask_size`, 288) are the decoder's own, clipped to ±32.

        Raises:
            InvalidInputError: the checkpoint has no tracker (text and exemplar prompts only), or an empty batch.
            BackendError: the decoder failed.
        """
        tracker = self._open_tracker()
        if len(batch) == 0:
            raise InvalidInputError("empty prompt batch")
        features = tuple(embedding.features)
        if len(features) != self._concept_count + TRACKER_LEVELS:
            raise InvalidInputError("this image embedding was made without SAM 3's tracker features; embed it again")
        scale = self.resolution / INPUT_SIZE

        def tensor(array: np.ndarray | None, factor: float = 1.0) -> torch.Tensor | None:
            if array is None:
                return None
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) * np.float32(factor)).to(self.device)

        labels = None if batch.labels is None else torch.from_numpy(np.asarray(batch.labels, dtype=np.int64))
        try:
            with oom_guard("while decoding"), torch.inference_mode():
                logits, scores = predict(
                    tracker,
                    features[self._concept_count :],
                    points=tensor(batch.points, scale),
                    labels=None if labels is None else labels.to(self.device),
                    boxes=tensor(batch.boxes, scale),
                    mask_inputs=tensor(batch.mask_inputs),
                    multimask=multimask,
                )
        except RuntimeError as exc:
            raise BackendError(f"SAM 3 tracker failed: {exc}") from exc
        raw = logits.float().cpu().numpy()
        return DecoderOutput(
            low_res_logits=np.clip(raw, -_LOGIT_CLAMP, _LOGIT_CLAMP),
            iou_scores=scores.float().cpu().numpy(),
            mask_logits=fill_holes(raw),
        )

    def check_prompts(self) -> None:
        """Raise :class:`InvalidInputError` when this checkpoint cannot answer box / point prompts (called by the
        SDK before it encodes an image for them)."""
        self._open_tracker()

    def detect(self, embedding: ImageEmbedding, phrase: str, exemplars: np.ndarray) -> Detections:
        """Every query's score, box and mask logits for ``phrase`` and ``exemplars`` on an encoded image.

        Args:
            embedding: from :meth:`encode`.
            phrase: the noun phrase (already checked to be non-empty).
            exemplars: float32 ``[K, 5]``: XYXY boxes in pixels of the original image plus a label (1 positive,
                0 negative); ``K`` may be 0.
        """
        model = self._open()
        height, width = embedding.original_size
        boxes = np.asarray(exemplars, dtype=np.float32).reshape(-1, 5)
        cxcywh = np.stack(
            [
                (boxes[:, 0] + boxes[:, 2]) / 2 / width,
                (boxes[:, 1] + boxes[:, 3]) / 2 / height,
                (boxes[:, 2] - boxes[:, 0]) / width,
                (boxes[:, 3] - boxes[:, 1]) / height,
                boxes[:, 4],
            ],
            axis=1,
        )
        prompt = torch.from_numpy(cxcywh).to(self.device)[None]
        try:
            with oom_guard("while detecting"), torch.inference_mode():
                concept = tuple(embedding.features)[: self._concept_count]
                return detect(model, concept, self._text(model, phrase), prompt)
        except RuntimeError as exc:
            raise BackendError(f"SAM 3 detector failed: {exc}") from exc

    def _text(self, model: Any, phrase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The phrase's text features, computed once per phrase (a small per-backend cache)."""
        with self._text_lock:
            cached = self._text_cache.get(phrase)
        if cached is None:
            cached = encode_text(model, self.tokenizer(phrase).to(self.device))
            with self._text_lock:
                if len(self._text_cache) >= 256:
                    self._text_cache.pop(next(iter(self._text_cache)))
                self._text_cache[phrase] = cached
        return cached

    def close(self) -> None:
        """Drop the model; later calls raise :class:`BackendError`."""
        if self.model is not None:
            self.model = None
            self.tracker = None
            self._text_cache.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _open_tracker(self) -> Any:
        self._open()
        if self.tracker is None:
            raise InvalidInputError(
                "this sam3 checkpoint has no tracker weights, so box and point prompts are not available: it answers "
                "text and exemplar prompts (segment_text, POST /v1/segment/text). Meta's full sam3.pt carries the "
                "tracker ('tracker.*' keys); a transformers-format Sam3Model folder does not"
            )
        return self.tracker

    def _open(self) -> Any:
        if self.model is None:
            raise BackendError("the sam3 backend is closed")
        return self.model
