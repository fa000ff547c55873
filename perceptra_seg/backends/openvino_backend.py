"""OpenVINO runtime (``runtime.backend: openvino``): the image encoder of our ONNX export compiled by OpenVINO's CPU
plugin; the prompt encoder + mask decoder stay on ONNX Runtime (milliseconds either way).

Why: on a 2-core AMD EPYC (AVX-512, BF16, VNNI) OpenVINO ran the hiera_tiny encoder export 1.1–2.4× faster than
ONNX Runtime at identical masks (fp32), and 2–4.5× faster with its bf16 hint (BENCHMARKS.md, "OpenVINO trial").
The export is the one the ``onnx`` backend uses (``onnx.model_dir``, else the cache, exported on first use when
``onnx.auto_export`` allows), always the fp32 one: OpenVINO picks its own arithmetic from the inference precision
hint.

Precision: ``fp32`` → OpenVINO's f32 hint (masks as ONNX Runtime's fp32); ``auto`` → the bf16 hint on a CPU with
native bf16 for the models whose bf16 masks are measured at IoU ≥ 0.97
(:func:`~perceptra_seg.backends.precision.decide_openvino_auto`), else f32; ``bf16`` → its bf16 hint
(every layer in bf16; worst-prompt mask IoU vs fp32 measured 0.976–0.990 on hiera_tiny, vit_b, hiera_small; only on a
CPU with native bf16, elsewhere a configuration error); ``fp16`` is refused. CPU only.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .. import hardware
from ..config import SegmentorConfig
from ..exceptions import BackendError, ConfigError
from ..extras import install_command
from ..preprocessing import preprocess_image
from .base import ImageEmbedding
from .onnx_backend import OnnxBackend
from .onnx_manifest import encoder_outputs
from .precision import decide_openvino_auto

try:
    import openvino as ov
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"the openvino backend needs OpenVINO: {install_command('openvino')}") from exc

__all__ = ["OpenVinoBackend"]

logger = logging.getLogger(__name__)

_HINTS = {"auto": "f32", "fp32": "f32", "bf16": "bf16"}


def _onnx_settings(config: SegmentorConfig) -> SegmentorConfig:
    """``config`` as the onnx backend must read it to find (or make) the fp32 export on the CPU.

    Raises:
        ConfigError: a device, precision or quantisation the openvino backend does not run.
    """
    runtime = config.runtime
    if runtime.device not in ("auto", "cpu"):
        raise ConfigError(f"the openvino backend runs on the CPU only, not device {runtime.device!r}")
    if runtime.precision not in _HINTS:
        raise ConfigError(f"the openvino backend runs fp32 or bf16, not {runtime.precision!r}")
    if runtime.precision == "bf16" and not hardware.cpu_features().native_bf16:
        raise ConfigError("the openvino backend's bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX_BF16)")
    if config.onnx.quantize is not None:
        raise ConfigError("the openvino backend reads the fp32 export; onnx.quantize must be unset")
    onnx_runtime = runtime.model_copy(update={"backend": "onnx", "device": "cpu", "precision": "fp32"})
    return config.model_copy(update={"runtime": onnx_runtime})


class OpenVinoBackend(OnnxBackend):
    """The ONNX backend with its image encoder run by OpenVINO (see the module docstring)."""

    def __init__(self, config: SegmentorConfig) -> None:
        super().__init__(_onnx_settings(config))
        self._sessions.pop("encoder")  # OpenVINO runs it; ONNX Runtime keeps only the decoders
        requested = config.runtime.precision
        if requested == "auto":
            resolved, reason = decide_openvino_auto(
                self.family, self.spec.precision_key, custom_architecture=bool(config.model.architecture)
            )
            logger.info("precision auto-selected for OpenVINO: %s (%s)", resolved, reason)
        else:
            resolved = requested
        self.precision = resolved  # type: ignore[assignment]
        properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINTS[resolved]}
        if config.runtime.num_threads is not None:
            properties["INFERENCE_NUM_THREADS"] = config.runtime.num_threads
        path = self.directory / self.manifest.graphs["encoder"].file
        try:
            self._encoder: Any = ov.Core().compile_model(str(path), "CPU", properties)
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO cannot compile {path}: {exc}") from None
        self._outputs = [self._encoder.output(name) for name in encoder_outputs(self.family)]
        self.fingerprint = "|".join(
            (self.spec.name, self.spec.variant, "openvino", "cpu", self.precision, self.manifest.checkpoint)
        )
        logger.info("image encoder compiled by OpenVINO %s (%s hint)", ov.__version__, _HINTS[resolved])

    def info(self) -> dict[str, Any]:
        return {**super().info(), "backend": "openvino", "precision": self.precision}

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Run the encoder on an RGB uint8 ``[H, W, 3]`` image; features are float32 numpy arrays (as the onnx
        backend's, so its decoder reads them unchanged)."""
        if self._encoder is None:
            raise BackendError("the openvino backend is closed")
        pixels, input_size = preprocess_image(image, self.family)
        try:
            outputs = self._encoder.create_infer_request().infer({"pixel_values": pixels})
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO encoder failed: {exc}") from exc
        features = tuple(np.ascontiguousarray(outputs[port], dtype=np.float32) for port in self._outputs)
        return ImageEmbedding(
            original_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=input_size,
            features=features,
            nbytes=sum(feature.nbytes for feature in features),
        )

    def close(self) -> None:
        self._encoder = None
        super().close()
