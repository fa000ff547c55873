"""ONNX Runtime backend: exported SAM graphs behind the encode/decode protocol, without torch.

The graphs come from :func:`perceptra_seg.backends.export.export_onnx` (``segmentor-cli export-onnx``). Where they
live: ``onnx.model_dir`` when set, else a per-model folder in the cache
(:func:`~perceptra_seg.backends.onnx_manifest.default_onnx_dir`). When that folder holds no export, the backend
exports one on first use if torch is installed and ``onnx.auto_export`` is on, and otherwise says which command to
run. Its ``manifest.json`` must name the configured model, variant, precision and (when the checkpoint is available
locally) checkpoint fingerprint, or the backend refuses to load it. ``runtime.precision: auto`` takes the precision
of the export found there. An INT8 export with signed weights (older perceptra-seg) is refused on a CPU without VNNI,
where its integer products saturate, with the command that exports it again.

Sessions are created once per backend (one encoder, one decoder per ``multimask`` setting) and are thread-safe.
Memory: the CPU arena is on for every session; memory-pattern planning is on for the fixed-shape encoder and off for
the decoders, whose shapes change with the number of prompts and points (see docs/onnx.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import hardware
from ..config import SegmentorConfig
from ..exceptions import BackendError, ConfigError, InvalidInputError, ModelLoadError, ResourceExhaustedError
from ..extras import install_command
from ..preprocessing import preprocess_image
from ..registry import get_model_spec
from ..weights import resolve_checkpoint
from .base import Backend, DecoderOutput, Family, ImageEmbedding, PromptBatch
from .onnx_manifest import (
    DECODER_OUTPUTS,
    MANIFEST_NAME,
    OnnxManifest,
    Precision,
    check_manifest,
    default_onnx_dir,
    encoder_outputs,
    export_command,
    read_manifest,
)
from .precision import local_fingerprint, resolve_onnx_auto

try:
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"the onnx backend needs ONNX Runtime: {install_command('onnx')}") from exc

__all__ = ["OnnxBackend", "decoder_feed", "select_providers"]

logger = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_ORT_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    ort_state.EPFail,
)


def select_providers(device: str, available: Sequence[str]) -> tuple[list[Any], str]:
    """Execution providers for a configured ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Returns:
        ``(providers, device label)``: CUDA (with its ``device_id``) then CPU, or CPU alone.

    Raises:
        ConfigError: a CUDA device is requested but ONNX Runtime has no CUDA execution provider.
    """
    if device == "cpu":
        return [_CPU], "cpu"
    if device == "auto":
        chosen = ([(_CUDA, {"device_id": 0}), _CPU], "cuda:0") if _CUDA in available else ([_CPU], "cpu")
        logger.info("device auto-selected for ONNX Runtime: %s (available providers: %s)", chosen[1], list(available))
        return chosen
    if _CUDA not in available:
        raise ConfigError(
            f"device {device!r} requested but ONNX Runtime offers no CUDAExecutionProvider (available:"
            f" {', '.join(available)}); install onnxruntime-gpu or use device='cpu'"
        )
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return [(_CUDA, {"device_id": index}), _CPU], f"cuda:{index}"


def decoder_feed(batch: PromptBatch, family: Family, mask_size: int) -> dict[str, np.ndarray]:
    """The decoder's prompt inputs for a batch, laid out as the torch model orders its prompt tokens.

    Points come first (labels 0/1), then the box as two corner points (labels 2, 3), then one padding point
    (label -1) where the model adds one: SAM 1 only without a box, SAM 2 always.

    Returns:
        ``point_coords`` float32 ``[N, T, 2]``, ``point_labels`` int64 ``[N, T]``, ``mask_input`` float32
        ``[N or 1, 1, mask_size, mask_size]`` and ``has_mask_input`` float32 ``[1]``.
    """
    count = len(batch)
    coords: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    if batch.points is not None and batch.labels is not None:
        coords.append(np.asarray(batch.points, dtype=np.float32).reshape(count, -1, 2))
        labels.append(np.asarray(batch.labels, dtype=np.int64).reshape(count, -1))
    if batch.boxes is not None:
        coords.append(np.asarray(batch.boxes, dtype=np.float32).reshape(count, 2, 2))
        labels.append(np.tile(np.array([2, 3], dtype=np.int64), (count, 1)))
    if batch.boxes is None or family == "sam2":
        coords.append(np.zeros((count, 1, 2), dtype=np.float32))
        labels.append(np.full((count, 1), -1, dtype=np.int64))
    if batch.mask_inputs is not None:
        masks = np.ascontiguousarray(batch.mask_inputs, dtype=np.float32).reshape(count, 1, mask_size, mask_size)
        has_mask = np.ones(1, dtype=np.float32)
    else:
        masks = np.zeros((1, 1, mask_size, mask_size), dtype=np.float32)
        has_mask = np.zeros(1, dtype=np.float32)
    return {
        "point_coords": np.ascontiguousarray(np.concatenate(coords, axis=1)),
        "point_labels": np.ascontiguousarray(np.concatenate(labels, axis=1)),
        "mask_input": masks,
        "has_mask_input": has_mask,
    }


def _mask_size(decoder: Any) -> int:
    """Side of a decoder graph's ``mask_input`` (static in our exports: 4 × the embedding grid)."""
    shape = next(i.shape for i in decoder.get_inputs() if i.name == "mask_input")
    if not isinstance(shape[-1], int):
        raise ModelLoadError(f"the decoder's mask_input has no static size ({shape}); re-export the model")
    return int(shape[-1])


def _requested_precision(config: SegmentorConfig) -> Precision | Literal["auto"]:
    """``runtime.precision`` combined with ``onnx.quantize``: fp32, fp16, int8 or ``auto`` (decided by the export)."""
    precision = config.runtime.precision
    if precision == "bf16":
        raise ConfigError("the onnx backend runs fp32, fp16 or INT8 (onnx.quantize); bf16 is torch-only")
    if config.onnx.quantize == "int8":
        if precision not in ("fp32", "auto"):
            raise ConfigError(f"onnx.quantize='int8' runs with runtime.precision auto or fp32, not {precision}")
        return "int8"
    return precision


def _check_int8_kernels(manifest: OnnxManifest, directory: Path, command: str) -> None:
    """Refuse an INT8 export whose integer products saturate on this CPU (signed weights without VNNI).

    Raises:
        ModelLoadError: naming the export's quantisation, the CPU's missing feature and the command that re-exports.
    """
    scheme = manifest.quantization
    if scheme is None or not scheme.saturates_without_vnni or hardware.cpu_features().int8_dot32:
        return
    raise ModelLoadError(
        f"the INT8 export in {directory} has signed (int8) weights without reduce_range (written by perceptra-seg"
        f" {manifest.exported_with.get('perceptra-seg', '(unknown version)')}); on this CPU, which has no VNNI"
        " (AVX512_VNNI/AVX_VNNI/AMX_INT8), its integer products saturate and masks come out wrong."
        f" Export it again (uint8 weights, exact on every CPU): {command}"
    )


def _torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _session(path: Path, providers: list[Any], threads: int | None, static_shapes: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = static_shapes
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except _ORT_ERRORS as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load {path}: {exc}") from None


class OnnxBackend(Backend):
    """Encode/decode with ONNX Runtime sessions of an exported SAM 1 or SAM 2 model (fp32, fp16 or INT8)."""

    def __init__(self, config: SegmentorConfig) -> None:
        self.spec = get_model_spec(config.model.name, config.model.variant)
        self.family: Family = self.spec.family
        wanted = _requested_precision(config)
        requested = config.runtime.device
        providers, self.device = select_providers(requested, ort.get_available_providers())
        checkpoint = local_fingerprint(config, self.spec)
        self.precision: Precision = resolve_onnx_auto(config, self.spec, checkpoint) if wanted == "auto" else wanted
        self.directory = self._directory(config, checkpoint)
        self.manifest = self._load_manifest(config, checkpoint)
        if self.precision == "int8" and self.device == "cpu":
            _check_int8_kernels(
                self.manifest,
                self.directory,
                export_command(self.spec.name, self.spec.variant, config.model.checkpoint_path, self.directory, "int8"),
            )
        threads = config.runtime.num_threads
        self._sessions = {
            name: _session(self.directory / graph.file, providers, threads, static_shapes=name == "encoder")
            for name, graph in self.manifest.graphs.items()
        }
        self.providers = self._sessions["encoder"].get_providers()
        self.mask_size = _mask_size(next(s for n, s in self._sessions.items() if n != "encoder"))
        if self.device.startswith("cuda") and _CUDA not in self.providers:
            if requested != "auto":
                raise ConfigError(f"device {requested!r} requested but ONNX Runtime could not start CUDA")
            self.device = "cpu"
        self.fingerprint = "|".join(
            (self.spec.name, self.spec.variant, "onnx", self.device, self.precision, self.manifest.checkpoint)
        )
        logger.info(
            "loaded ONNX %s/%s (%s) from %s; providers in use: %s; intra-op threads: %s",
            self.spec.name,
            self.spec.variant,
            self.precision,
            self.directory,
            ", ".join(self.providers),
            threads if threads is not None else "default",
        )

    # ------------------------------------------------------------------ loading

    def _directory(self, config: SegmentorConfig, checkpoint: str | None) -> Path:
        if config.onnx.model_dir is not None:
            return Path(config.onnx.model_dir).expanduser()
        if checkpoint is None:
            # the cache folder is named after the checkpoint, which is only known once it is here
            self._require_export_possible(config, None)
            model = config.model
            checkpoint = resolve_checkpoint(
                self.spec,
                None,
                cache_dir=model.cache_dir,
                offline=model.offline,
                download_base_url=model.download_base_url,
                timeout_s=model.download_timeout_s,
            ).fingerprint
        return default_onnx_dir(config.model.cache_dir, self.spec.name, self.spec.variant, self.precision, checkpoint)

    def _require_export_possible(self, config: SegmentorConfig, directory: Path | None) -> None:
        where = directory if directory is not None else Path("<export dir>")
        command = export_command(self.spec.name, self.spec.variant, config.model.checkpoint_path, where, self.precision)
        if directory is None:
            missing = (
                f"no ONNX export of {self.spec.name}/{self.spec.variant} ({self.precision}) is configured"
                " (onnx.model_dir) and no checkpoint is available locally to find or make one in the cache"
            )
            then = "; then set onnx.model_dir to that folder"
        else:
            missing = f"no ONNX export of {self.spec.name}/{self.spec.variant} ({self.precision}) in {directory}"
            then = ""
        if not config.onnx.auto_export:
            raise ModelLoadError(f"{missing}, and onnx.auto_export is off; create it with: {command}{then}")
        if not _torch_installed():
            raise ModelLoadError(
                f"{missing}, and exporting one needs torch, which is not installed. On a machine with"
                f" {install_command('export')}, run: {command}{then or ' (or copy an export there)'}"
            )

    def _load_manifest(self, config: SegmentorConfig, checkpoint: str | None) -> OnnxManifest:
        if not (self.directory / MANIFEST_NAME).is_file():
            self._require_export_possible(config, self.directory)
            from .export import export_onnx

            logger.warning(
                "no ONNX export of %s/%s (%s) in %s: exporting it now (once; this takes a while)",
                self.spec.name,
                self.spec.variant,
                self.precision,
                self.directory,
            )
            export_onnx(
                config,
                self.directory,
                quantize="int8" if self.precision == "int8" else None,
                fp16=self.precision == "fp16",
            )
        manifest = read_manifest(self.directory)
        check_manifest(
            manifest,
            self.directory,
            model=self.spec.name,
            variant=self.spec.variant,
            family=self.family,
            precision=self.precision,
            checkpoint=checkpoint,
        )
        if checkpoint is None:
            logger.info("checkpoint not available locally; trusting the export's fingerprint %s", manifest.checkpoint)
        return manifest

    # ------------------------------------------------------------------ protocol

    def info(self) -> dict[str, Any]:
        return {
            "model": self.spec.name,
            "variant": self.spec.variant,
            "backend": "onnx",
            "device": self.device,
            "precision": self.precision,
            "checkpoint": self.manifest.checkpoint,
            "providers": list(self.providers),
            "quantization": asdict(self.manifest.quantization) if self.manifest.quantization else None,
        }

    def _run(self, name: str, outputs: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._sessions.get(name)
        if session is None:
            raise BackendError("the onnx backend is closed")
        try:
            return list(session.run(list(outputs), feed))
        except _ORT_ERRORS as exc:
            message = str(exc)
            if "allocate" in message.lower() or "out of memory" in message.lower():
                raise ResourceExhaustedError(f"out of memory in the ONNX {name}: {message}") from None
            raise BackendError(f"ONNX {name} failed: {message}") from exc

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Run the encoder on an RGB uint8 ``[H, W, 3]`` image; features are float32 numpy arrays."""
        pixels, input_size = preprocess_image(image, self.family)
        outputs = self._run("encoder", encoder_outputs(self.family), {"pixel_values": pixels})
        features = tuple(np.ascontiguousarray(output, dtype=np.float32) for output in outputs)
        return ImageEmbedding(
            original_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=input_size,
            features=features,
            nbytes=sum(feature.nbytes for feature in features),
        )

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        """Answer all N prompts of ``batch`` in one decoder call: logits ``[N, K, S, S]``, scores ``[N, K]``."""
        if len(batch) == 0:
            raise InvalidInputError("empty prompt batch")
        names = encoder_outputs(self.family)
        features = embedding.features
        if not isinstance(features, tuple) or len(features) != len(names):
            raise BackendError("this embedding was not produced by the onnx backend's encoder")
        if not all(isinstance(feature, np.ndarray) for feature in features):
            raise BackendError("this embedding was not produced by the onnx backend's encoder")
        feed = dict(zip(names, features, strict=True))
        feed.update(decoder_feed(batch, self.family, self.mask_size))
        logits, scores = self._run("decoder_multi" if multimask else "decoder_single", DECODER_OUTPUTS, feed)
        return DecoderOutput(
            low_res_logits=np.ascontiguousarray(logits, dtype=np.float32),
            iou_scores=np.ascontiguousarray(scores, dtype=np.float32),
        )

    def close(self) -> None:
        """Drop the sessions (their memory is freed when no call is still running)."""
        self._sessions.clear()
