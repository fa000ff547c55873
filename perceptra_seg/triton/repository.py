"""``segmentor-cli export-triton``: a Triton model repository of our ONNX graphs, for existing Triton deployments.

Layout (``<prefix>`` = model and variant, e.g. ``sam_v2_hiera_tiny``; dots become underscores)::

    <out>/<prefix>_encoder/config.pbtxt         onnxruntime backend, max_batch_size + dynamic batching
    <out>/<prefix>_encoder/1/model.onnx         pixel_values [B, 3, 1024, 1024] → features [B, ...]
    <out>/<prefix>_decoder_single/config.pbtxt  onnxruntime backend, no batching (one call = N prompts)
    <out>/<prefix>_decoder_single/1/model.onnx
    <out>/<prefix>_decoder_multi/...            the same with three masks per prompt

The graphs are those of ``export-onnx`` (inputs and outputs: :mod:`perceptra_seg.backends.onnx_manifest`), except
that the encoder's first axis is dynamic so Triton can stack requests. There is no ensemble: an ensemble would run
the encoder for every prompt batch, while SAM's point is one encoder call per image and many cheap decoder calls.
The client flow is therefore: preprocess the image (:func:`perceptra_seg.preprocessing.preprocess_image`), call the
encoder once, keep its outputs, and call a decoder per prompt batch with those outputs plus the prompt tensors laid
out by :func:`perceptra_seg.backends.onnx_backend.decoder_feed` (docs/triton.md shows it). Every ``config.pbtxt``
declares the tensor names, types and shapes read from its graph.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..config import SegmentorConfig
from ..extras import install_command
from ..utils.atomic import make_dir_public

try:
    import onnx

    from ..backends.export import _save
    from ..backends.export_graphs import export_fp32_graphs
    from ..backends.torch_backend import TorchBackend
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"export-triton needs PyTorch, transformers and onnx: {install_command('export')}") from exc

__all__ = ["config_text", "export_triton_repository", "model_prefix"]

logger = logging.getLogger(__name__)

_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


def model_prefix(model: str, variant: str) -> str:
    """``sam_v2.0`` + ``hiera_tiny`` → ``sam_v2_0_hiera_tiny`` (Triton model names: letters, digits, ``_``)."""
    return f"{model}_{variant}".replace(".", "_").replace("-", "_")


def _tensors(values: Any, *, skip_batch: bool) -> list[tuple[str, str, list[int]]]:
    """``(name, Triton type, dims)`` of ONNX graph inputs or outputs; symbolic or unknown dims are ``-1``."""
    tensors = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        tensors.append((value.name, _TYPES[tensor_type.elem_type], dims[1:] if skip_batch else dims))
    return tensors


def config_text(
    name: str, graph: onnx.ModelProto, *, max_batch_size: int = 0, max_queue_delay_us: int | None = None
) -> str:
    """The ``config.pbtxt`` of one ONNX graph for Triton's onnxruntime backend.

    Args:
        max_batch_size: 0 = no batching (dims are whole shapes); else the graph's first axis is the batch axis
            (left out of ``dims``) and ``max_queue_delay_us`` enables dynamic batching.
    """
    batched = max_batch_size > 0
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch_size}"]
    for section, values in (("input", graph.graph.input), ("output", graph.graph.output)):
        entries = [
            f'  {{ name: "{tensor}" data_type: {kind} dims: [ {", ".join(str(d) for d in dims)} ] }}'
            for tensor, kind, dims in _tensors(values, skip_batch=batched)
        ]
        lines.append(f"{section} [\n" + ",\n".join(entries) + "\n]")
    if batched and max_queue_delay_us is not None:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}")
    return "\n".join(lines) + "\n"


def export_triton_repository(config: SegmentorConfig, out_dir: str | Path, *, opset: int = 17) -> dict[str, Path]:
    """Trace the configured model and write its Triton model repository into ``out_dir`` (created or refilled).

    ``triton.max_batch_size`` and ``triton.max_queue_delay_ms`` configure the encoder's dynamic batching.

    Returns:
        Model name → its directory.

    Raises:
        ModelLoadError: the checkpoint cannot be loaded (as for the torch backend).
    """
    runtime = {"backend": "torch", "device": "cpu", "precision": "fp32", "compile": False}
    settings = SegmentorConfig.resolve(config, sections={"runtime": runtime})
    backend = TorchBackend(settings)
    prefix = model_prefix(backend.spec.name, backend.spec.variant)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    models: dict[str, Path] = {}
    try:
        with tempfile.TemporaryDirectory(prefix=".triton-export-", dir=out) as traced:
            paths = export_fp32_graphs(backend.model, backend.family, Path(traced), opset, batched_encoder=True)
            for graph_name, path in paths.items():
                name = f"{prefix}_{graph_name}"
                proto = onnx.load(str(path))
                directory = out / name
                if directory.exists():
                    shutil.rmtree(directory)
                (directory / "1").mkdir(parents=True)
                make_dir_public(directory)
                make_dir_public(directory / "1")
                batching = graph_name == "encoder"
                text = config_text(
                    name,
                    proto,
                    max_batch_size=settings.triton.max_batch_size if batching else 0,
                    max_queue_delay_us=round(settings.triton.max_queue_delay_ms * 1000) if batching else None,
                )
                _save(proto, directory / "1" / "model.onnx")
                (directory / "config.pbtxt").write_text(text, encoding="utf-8")
                models[name] = directory
    finally:
        backend.close()
    logger.info("Triton model repository for %s written to %s", prefix, out)
    return models
