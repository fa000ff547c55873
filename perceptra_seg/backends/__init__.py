"""Inference runtimes behind the encode/decode protocol of :mod:`perceptra_seg.backends.base`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backend, DecoderOutput, ImageEmbedding, PromptBatch, require_backend

if TYPE_CHECKING:
    from ..config import SegmentorConfig

__all__ = ["Backend", "DecoderOutput", "ImageEmbedding", "PromptBatch", "create_backend", "require_backend"]


def create_backend(config: SegmentorConfig) -> Backend:
    """Build the runtime named by ``config.runtime.backend``, importing its heavy dependencies lazily.

    Raises:
        ModelLoadError: the runtime's extra is not installed (the message names the ``pip install`` line), or the
            model cannot be loaded.
    """
    from ..extras import missing_extra

    name = config.runtime.backend
    try:
        if config.model.name == "sam3":  # SAM 3's concept model (text / exemplar prompts; torch only)
            from ..concepts.backend import Sam3Backend

            return Sam3Backend(config)
        if name == "onnx":
            from .onnx_backend import OnnxBackend

            return OnnxBackend(config)
        if name == "openvino":
            from .openvino_backend import OpenVinoBackend

            return OpenVinoBackend(config)
        if name == "triton":
            from .triton_backend import TritonBackend

            return TritonBackend(config)
        from .torch_backend import TorchBackend

        return TorchBackend(config)
    except ImportError as exc:  # torch, transformers or onnxruntime missing (also when imported lazily)
        raise missing_extra(name, exc) from exc
