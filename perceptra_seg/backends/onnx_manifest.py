"""The contract between an ONNX export and the runtime that loads it (no torch, no onnxruntime needed).

An export directory holds three graphs and ``manifest.json``:

* ``encoder.onnx``: ``pixel_values`` float32 ``[1, 3, 1024, 1024]`` (NCHW, already normalised by
  :func:`perceptra_seg.preprocessing.preprocess_image`) → the image features: SAM 1 ``image_embeddings``
  ``[1, 256, 64, 64]``; SAM 2 ``high_res_feats_0`` ``[1, 32, 256, 256]``, ``high_res_feats_1`` ``[1, 64, 128, 128]``
  and ``image_embeddings`` ``[1, 256, 64, 64]``.
* ``decoder_single.onnx`` / ``decoder_multi.onnx``: prompt encoder + mask decoder with ``multimask_output`` fixed to
  False / True. Inputs: the encoder outputs, ``point_coords`` float32 ``[N, T, 2]`` as ``(x, y)`` in the 1024 input
  frame, ``point_labels`` int64 ``[N, T]`` (1 foreground, 0 background, 2 / 3 box top-left / bottom-right corner,
  -1 padding), ``mask_input`` float32 ``[M, 1, S, S]`` with ``M`` 1 or ``N``, ``has_mask_input`` float32 ``[1]``.
  Outputs: ``low_res_logits`` float32 ``[N, K, S, S]`` and ``iou_scores`` float32 ``[N, K]`` (K = 1 or 3).
  ``S`` = 4 × the embedding grid: 256 for Meta's models (static in the graph; the backend reads it from there).

The manifest names the model, variant, family, checkpoint fingerprint, opset, precision, each graph's file, size and
input/output names, and the preprocessing, so that the runtime refuses a pair that does not belong together. INT8
exports also record how they were quantised (:class:`Quantization`); manifests written before that field existed
are read as the signed-weight scheme they used (:data:`LEGACY_INT8`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import platformdirs

from ..exceptions import ModelLoadError
from .base import Family

__all__ = [
    "DECODER_OUTPUTS",
    "FORMAT_VERSION",
    "GRAPH_NAMES",
    "INT8_QUANTIZATION",
    "LEGACY_INT8",
    "MANIFEST_NAME",
    "PREPROCESSING",
    "GraphInfo",
    "OnnxManifest",
    "Precision",
    "Quantization",
    "check_manifest",
    "decoder_inputs",
    "default_onnx_dir",
    "encoder_outputs",
    "export_command",
    "read_manifest",
    "write_manifest",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
Precision = Literal["fp32", "fp16", "int8"]
#: graph name → file name; decoder_single / decoder_multi are the decoder with multimask_output False / True.
GRAPH_NAMES: dict[str, str] = {
    "encoder": "encoder.onnx",
    "decoder_single": "decoder_single.onnx",
    "decoder_multi": "decoder_multi.onnx",
}
#: what :func:`perceptra_seg.preprocessing.preprocess_image` does per family; an export records its family's entry.
PREPROCESSING: dict[str, str] = {
    "sam1": "resize longest side to 1024 (PIL bilinear), ImageNet mean/std in 0..255, pad bottom/right to 1024x1024",
    "sam2": "resize to 1024x1024 (antialiased bilinear on 0..1 floats), ImageNet mean/std",
}
DECODER_OUTPUTS: tuple[str, ...] = ("low_res_logits", "iou_scores")
_PROMPT_INPUTS: tuple[str, ...] = ("point_coords", "point_labels", "mask_input", "has_mask_input")


def encoder_outputs(family: Family) -> tuple[str, ...]:
    """Names of the encoder outputs, in the order the torch backend keeps its features."""
    if family == "sam1":
        return ("image_embeddings",)
    return ("high_res_feats_0", "high_res_feats_1", "image_embeddings")


def decoder_inputs(family: Family) -> tuple[str, ...]:
    """Names of the decoder inputs: the encoder outputs followed by the prompt tensors."""
    return encoder_outputs(family) + _PROMPT_INPUTS


@dataclass(frozen=True)
class GraphInfo:
    """One exported graph.

    Attributes:
        file: file name inside the export directory.
        data_file: external-data file holding the weights of graphs over protobuf's 2 GiB limit, else ``None``.
        bytes: size of ``file`` plus ``data_file`` (a truncated copy is refused).
        precision: numeric format of this graph's weights (fp16 exports keep the decoders in fp32).
        inputs, outputs: tensor names, in order.
    """

    file: str
    data_file: str | None
    bytes: int
    precision: Precision
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Quantization:
    """How an INT8 export was quantised: ONNX Runtime's dynamic quantisation of the MatMul weights.

    Activations are quantised at run time to uint8. With int8 (signed) weights, CPUs without VNNI (AVX2 only) multiply
    in 16-bit pair sums that saturate (255 × 127 × 2 > 32767), which wrecks masks; uint8 weights use exact 16 × 16 →
    32-bit products there, and ``reduce_range`` (7-bit weights: 255 × 64 × 2 ≤ 32767) avoids the overflow at a
    loss of precision.

    Attributes:
        weight_type: ``"uint8"`` (asymmetric, what exports use now) or ``"int8"`` (symmetric, older exports).
        activation_type: always ``"uint8"`` (dynamic quantisation).
        reduce_range: weights limited to 7 bits.
        per_channel: one scale (and zero point) per output channel of each weight matrix.
    """

    weight_type: Literal["uint8", "int8"]
    activation_type: Literal["uint8"] = "uint8"
    reduce_range: bool = False
    per_channel: bool = True

    @property
    def saturates_without_vnni(self) -> bool:
        """Whether the integer products can overflow int16 on a CPU whose 8-bit kernels lack VNNI (AVX2 only)."""
        return self.weight_type == "int8" and not self.reduce_range


#: what ``export_onnx(quantize="int8")`` writes: exact integer arithmetic on every x86-64 CPU (AVX2 and AVX-512).
INT8_QUANTIZATION = Quantization(weight_type="uint8")
#: INT8 exports whose manifest has no ``quantization`` entry (perceptra-seg before it was recorded).
LEGACY_INT8 = Quantization(weight_type="int8")


@dataclass(frozen=True)
class OnnxManifest:
    """What an export directory holds (see the module docstring)."""

    model: str
    variant: str
    family: Family
    checkpoint: str
    opset: int
    precision: Precision
    preprocessing: str
    graphs: dict[str, GraphInfo]
    exported_with: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: how INT8 graphs were quantised; ``None`` for fp32 / fp16 exports
    quantization: Quantization | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OnnxManifest:
        """Raises ``KeyError`` / ``TypeError`` / ``ValueError`` on a malformed document."""
        graphs = {
            name: GraphInfo(
                file=str(g["file"]),
                data_file=None if g.get("data_file") is None else str(g["data_file"]),
                bytes=int(g["bytes"]),
                precision=g["precision"],
                inputs=tuple(g["inputs"]),
                outputs=tuple(g["outputs"]),
            )
            for name, g in data["graphs"].items()
        }
        quantization = None
        if data["precision"] == "int8":
            recorded = data.get("quantization")
            quantization = (
                LEGACY_INT8
                if recorded is None
                else Quantization(
                    weight_type=recorded["weight_type"],
                    activation_type=recorded["activation_type"],
                    reduce_range=bool(recorded["reduce_range"]),
                    per_channel=bool(recorded["per_channel"]),
                )
            )
            if quantization.weight_type not in ("uint8", "int8") or quantization.activation_type != "uint8":
                raise ValueError(f"unknown INT8 quantisation {recorded}")
        return cls(
            model=str(data["model"]),
            variant=str(data["variant"]),
            family=data["family"],
            checkpoint=str(data["checkpoint"]),
            opset=int(data["opset"]),
            precision=data["precision"],
            preprocessing=str(data["preprocessing"]),
            graphs=graphs,
            exported_with={str(k): str(v) for k, v in dict(data.get("exported_with", {})).items()},
            format_version=int(data["format_version"]),
            quantization=quantization,
        )


def read_manifest(directory: Path) -> OnnxManifest:
    """Read and structurally validate ``directory/manifest.json`` and the files it lists.

    Raises:
        ModelLoadError: no manifest, unreadable or malformed JSON, a format version this code does not know, or a
            graph file that is missing or has another size than recorded.
    """
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = OnnxManifest.from_dict(data)
    except FileNotFoundError:
        raise ModelLoadError(f"no ONNX export in {directory}: {MANIFEST_NAME} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"unreadable ONNX manifest {path}: {exc!r}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} has format version {manifest.format_version}, this perceptra-seg reads version {FORMAT_VERSION};"
            " export the model again"
        )
    missing = set(GRAPH_NAMES) - set(manifest.graphs)
    if missing:
        raise ModelLoadError(f"{path} lists no {', '.join(sorted(missing))} graph; export the model again")
    for name, graph in manifest.graphs.items():
        files = [directory / graph.file] + ([directory / graph.data_file] if graph.data_file else [])
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise ModelLoadError(f"ONNX export in {directory} is incomplete: {', '.join(absent)} missing")
        size = sum(f.stat().st_size for f in files)
        if size != graph.bytes:
            raise ModelLoadError(
                f"{name} graph in {directory} has {size} bytes, the manifest records {graph.bytes} (truncated or"
                " replaced file); export the model again"
            )
    return manifest


def write_manifest(directory: Path, manifest: OnnxManifest) -> Path:
    """Write ``manifest.json`` atomically (it is written last: its presence marks a complete export)."""
    path = directory / MANIFEST_NAME
    temporary = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
    temporary.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(temporary, path)
    return path


def check_manifest(
    manifest: OnnxManifest,
    directory: Path,
    *,
    model: str,
    variant: str,
    family: Family,
    precision: Precision,
    checkpoint: str | None,
) -> None:
    """Refuse an export that belongs to another model, variant, precision or checkpoint.

    Args:
        checkpoint: fingerprint of the configured checkpoint, or ``None`` when no checkpoint is available locally
            (then the manifest's fingerprint is trusted).

    Raises:
        ModelLoadError: naming every field that differs.
    """
    expected: dict[str, Any] = {
        "model": model,
        "variant": variant,
        "family": family,
        "precision": precision,
        "preprocessing": PREPROCESSING[family],
    }
    if checkpoint is not None:
        expected["checkpoint"] = checkpoint
    differences = [
        f"{key} {getattr(manifest, key)!r} (configured: {value!r})"
        for key, value in expected.items()
        if getattr(manifest, key) != value
    ]
    io = {
        "encoder": (("pixel_values",), encoder_outputs(family)),
        "decoder_single": (decoder_inputs(family), DECODER_OUTPUTS),
        "decoder_multi": (decoder_inputs(family), DECODER_OUTPUTS),
    }
    for name, (inputs, outputs) in io.items():
        graph = manifest.graphs[name]
        if graph.inputs != inputs or graph.outputs != outputs:
            differences.append(f"{name} inputs/outputs {graph.inputs}/{graph.outputs} (expected {inputs}/{outputs})")
    if differences:
        raise ModelLoadError(
            f"the ONNX export in {directory} does not match the configuration: {'; '.join(differences)}."
            " Export this model again or point onnx.model_dir at its export"
        )


def default_onnx_dir(
    cache_dir: str | os.PathLike[str] | None, model: str, variant: str, precision: Precision, checkpoint: str
) -> Path:
    """Where exports live when ``onnx.model_dir`` is not set: ``<cache>/onnx/<model>-<variant>-<precision>-<fp>``.

    ``<cache>`` is ``model.cache_dir`` when set, else the platform cache dir of perceptra-seg.
    """
    root = Path(cache_dir).expanduser() if cache_dir else Path(platformdirs.user_cache_dir("perceptra-seg"))
    return root / "onnx" / f"{model}-{variant}-{precision}-{checkpoint}"


def export_command(model: str, variant: str, checkpoint: str | None, out_dir: Path, precision: Precision) -> str:
    """The CLI command that produces the export the runtime is looking for."""
    parts = ["segmentor-cli export-onnx", f"--model {model}", f"--variant {variant}"]
    if checkpoint is not None:
        parts.append(f"--checkpoint {checkpoint}")
    parts.append(f"--out {out_dir}")
    if precision == "int8":
        parts.append("--quantize int8")
    elif precision == "fp16":
        parts.append("--fp16")
    return " ".join(parts)
