"""Export the torch backend's SAM models to ONNX: an image encoder and two prompt-encoder + mask-decoder graphs.

The graphs are traced from exactly the models :class:`~perceptra_seg.backends.torch_backend.TorchBackend` loads
(same checkpoint resolution and conversion), so the ONNX backend reproduces the torch backend. Graph inputs and
outputs are described in :mod:`perceptra_seg.backends.onnx_manifest`; the tracing itself lives in
:mod:`perceptra_seg.backends.export_graphs`, this module converts precision and publishes the export.

Prompts reach the decoder as labelled points (the layout of Meta's own ONNX export): box corners are points with
labels 2 and 3, and a padding point with label -1 closes the sequence where the torch model adds one (SAM 1: only
when there is no box; SAM 2: always). One graph thus serves boxes, points and both, for any number of prompts N and
points T. ``multimask_output`` changes the graph (SAM 2's single-mask output picks a multimask candidate when the
first mask is unstable), so it is fixed per graph: ``decoder_single`` and ``decoder_multi``.

Options: ``quantize="int8"`` applies ONNX Runtime's dynamic INT8 quantisation to the MatMul weights of every graph,
with uint8 weights and uint8 activations (U8U8, per output channel; recorded in the manifest): their integer products
are exact on every x86-64 CPU, whereas signed weights saturate 16-bit pair sums on CPUs without VNNI (AVX2 only);
``fp16=True`` converts the encoder to float16 (inputs and outputs stay float32) and keeps the decoders in fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from ..config import SegmentorConfig
from ..exceptions import ConfigError
from ..extras import install_command
from ..registry import get_model_spec
from ..utils.atomic import make_dir_public
from .base import Family
from .onnx_manifest import (
    DECODER_OUTPUTS,
    GRAPH_NAMES,
    INT8_QUANTIZATION,
    MANIFEST_NAME,
    PREPROCESSING,
    GraphInfo,
    OnnxManifest,
    Precision,
    decoder_inputs,
    default_onnx_dir,
    encoder_outputs,
    read_manifest,
    write_manifest,
)

try:
    import onnx

    from .export_graphs import export_fp32_graphs, has_external_data
    from .torch_backend import TorchBackend
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"exporting to ONNX needs PyTorch, transformers and onnx: {install_command('export')}") from exc

__all__ = ["DEFAULT_OPSET", "convert_export", "export_onnx", "export_precision"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: graphs whose weights exceed this are saved with their weights in one external ``<file>.data`` file
#: (protobuf cannot serialise more than 2 GiB; SAM 1 ViT-H's encoder is 2.5 GB).
_EXTERNAL_DATA_BYTES = 1536 * 1024 * 1024


def export_precision(quantize: str | None, fp16: bool) -> Precision:
    """The export precision named by the CLI options ``--quantize int8`` and ``--fp16``."""
    if quantize not in (None, "int8"):
        raise ConfigError(f"unknown quantisation {quantize!r}; the only one is 'int8'")
    if quantize and fp16:
        raise ConfigError("choose either INT8 quantisation or fp16, not both")
    return "int8" if quantize else "fp16" if fp16 else "fp32"


def _save(proto: onnx.ModelProto, target: Path) -> str | None:
    """Save ``proto`` as ``target``; large weights go to ``<target>.data``, whose name is returned."""
    del proto.graph.value_info[:]  # traced shape annotations; ONNX Runtime infers its own (avoids merge warnings)
    weights = sum(len(t.raw_data) or t.ByteSize() for t in proto.graph.initializer)
    if weights <= _EXTERNAL_DATA_BYTES:
        onnx.save_model(proto, str(target))
        return None
    data_file = f"{target.name}.data"
    onnx.save_model(
        proto,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_file,
        size_threshold=1024,
    )
    return data_file


def _drop_preprocessing_hint(record: logging.LogRecord) -> bool:
    """quantize_dynamic advises shape pre-processing on the root logger; our graphs carry their own shapes."""
    return "pre-processing before quantization" not in record.getMessage()


def _convert_graph(source: Path, target: Path, precision: Precision) -> str | None:
    """Write ``source`` (fp32) to ``target`` in ``precision``; returns the external data file name, if any."""
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        scheme = INT8_QUANTIZATION
        weight_type = QuantType.QUInt8 if scheme.weight_type == "uint8" else QuantType.QInt8

        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            quantized = Path(scratch) / target.name
            large = has_external_data(source)
            root = logging.getLogger()
            root.addFilter(_drop_preprocessing_hint)
            try:
                quantize_dynamic(
                    source,
                    quantized,
                    op_types_to_quantize=["MatMul"],
                    per_channel=scheme.per_channel,
                    reduce_range=scheme.reduce_range,
                    weight_type=weight_type,
                    use_external_data_format=large,
                )
            finally:
                root.removeFilter(_drop_preprocessing_hint)
            return _save(onnx.load(str(quantized)), target)
    proto = onnx.load(str(source))
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        proto = convert_float_to_float16(proto, keep_io_types=True)
    return _save(proto, target)


def _graph_precision(name: str, precision: Precision) -> Precision:
    return "fp32" if precision == "fp16" and name != "encoder" else precision


def _write_graphs(source: dict[str, Path], staging: Path, family: Family, precision: Precision) -> dict[str, GraphInfo]:
    graphs = {}
    for name, path in source.items():
        graph_precision = _graph_precision(name, precision)
        target = staging / GRAPH_NAMES[name]
        data_file = _convert_graph(path, target, graph_precision)
        size = target.stat().st_size + ((staging / data_file).stat().st_size if data_file else 0)
        inputs = ("pixel_values",) if name == "encoder" else decoder_inputs(family)
        outputs = encoder_outputs(family) if name == "encoder" else DECODER_OUTPUTS
        graphs[name] = GraphInfo(GRAPH_NAMES[name], data_file, size, graph_precision, inputs, outputs)
    return graphs


def _publish(staging: Path, directory: Path) -> None:
    """Move a complete export into place: atomically when ``directory`` is new, else file by file, manifest last."""
    try:
        os.rename(staging, directory)
        return
    except OSError:
        pass  # directory exists with content (an older export, or another process won a concurrent export)
    (directory / MANIFEST_NAME).unlink(missing_ok=True)
    for item in sorted(staging.iterdir()):
        if item.name != MANIFEST_NAME:
            os.replace(item, directory / item.name)
    os.replace(staging / MANIFEST_NAME, directory / MANIFEST_NAME)


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("perceptra-seg", "torch", "transformers", "onnx", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _export_settings(
    config: SegmentorConfig | Mapping[str, Any] | str | Path | None, model: dict[str, Any]
) -> SegmentorConfig:
    """The export's configuration: ``model`` holds the ``name`` / ``variant`` / ``checkpoint_path`` shortcuts."""
    shortcuts = {"model" if field == "name" else field: value for field, value in model.items()}
    # the graphs are traced from the fp32 model on CPU; they run on any device and precision is applied afterwards
    runtime = {"backend": "torch", "device": "cpu", "precision": "fp32", "compile": False}
    return SegmentorConfig.resolve(config, sections={"runtime": runtime}, **shortcuts)


def export_onnx(
    config: SegmentorConfig | Mapping[str, Any] | str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    model: str | None = None,
    variant: str | None = None,
    checkpoint_path: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    quantize: Literal["int8"] | None = None,
    fp16: bool = False,
) -> Path:
    """Export the configured model's encoder and decoders to ONNX and return the path of ``manifest.json``.

    Args:
        config: a :class:`SegmentorConfig`, a dict of sections, a YAML path or ``None`` (defaults + environment);
            ``model`` (name, variant, checkpoint_path, cache_dir, architecture, ...) says what to export.
        out_dir: export directory; ``None`` = where the ONNX backend looks by default
            (:func:`~perceptra_seg.backends.onnx_manifest.default_onnx_dir`). An existing export there is replaced.
        model, variant, checkpoint_path: shortcuts overriding ``config.model`` (as in ``Segmentor``).
        opset: ONNX opset of the graphs (17 or later keeps LayerNormalization a single operator).
        quantize: ``"int8"``: dynamic INT8 quantisation of all MatMul weights (uint8, per output channel; see
            :class:`~perceptra_seg.backends.onnx_manifest.Quantization`).
        fp16: float16 encoder (float32 inputs/outputs), float32 decoders.

    Raises:
        ConfigError: both ``quantize`` and ``fp16``, an unknown model/variant, or a model without ONNX graphs
            (``sam_hq``).
        ModelLoadError: the checkpoint cannot be found or loaded (as for the torch backend).
    """
    precision = export_precision(quantize, fp16)
    if opset < 14:
        raise ConfigError(f"opset {opset} is too old for these graphs; use 14 or later (default {DEFAULT_OPSET})")
    settings = _export_settings(config, {"name": model, "variant": variant, "checkpoint_path": checkpoint_path})
    if get_model_spec(settings.model.name, settings.model.variant).architecture == "sam_hq":
        raise ConfigError("ONNX export of sam_hq is not supported yet (its decoder also needs the early ViT feature)")
    backend = TorchBackend(settings)
    spec, family, fingerprint = backend.spec, backend.family, backend.source.fingerprint
    directory = (
        Path(out_dir).expanduser()
        if out_dir is not None
        else default_onnx_dir(settings.model.cache_dir, spec.name, spec.variant, precision, fingerprint)
    )
    logger.info(
        "exporting %s/%s (checkpoint %s) to ONNX opset %d, %s, into %s",
        spec.name,
        spec.variant,
        fingerprint,
        opset,
        precision,
        directory,
    )
    manifest = OnnxManifest(
        model=spec.name,
        variant=spec.variant,
        family=family,
        checkpoint=fingerprint,
        opset=opset,
        precision=precision,
        preprocessing=PREPROCESSING[family],
        graphs={},
        exported_with=_versions(),
        quantization=INT8_QUANTIZATION if precision == "int8" else None,
    )
    try:
        # the traced graphs live beside the staging folder, not in it: staging is renamed into place when published
        with _staging(directory) as staging, tempfile.TemporaryDirectory(prefix=".fp32-", dir=staging.parent) as traced:
            source = export_fp32_graphs(backend.model, family, Path(traced), opset)
            _finish(source, staging, directory, manifest)
    finally:
        backend.close()
    return directory / MANIFEST_NAME


def convert_export(
    source_dir: str | Path, out_dir: str | Path, *, quantize: Literal["int8"] | None = None, fp16: bool = False
) -> Path:
    """Derive an INT8 or fp16 export from an fp32 export (no tracing); returns the new ``manifest.json`` path.

    Raises:
        ConfigError: neither or both of ``quantize`` and ``fp16``, or ``source_dir`` is not an fp32 export.
        ModelLoadError: ``source_dir`` holds no complete export.
    """
    precision = export_precision(quantize, fp16)
    if precision == "fp32":
        raise ConfigError("convert_export needs quantize='int8' or fp16=True")
    source = Path(source_dir).expanduser()
    original = read_manifest(source)
    if original.precision != "fp32":
        raise ConfigError(f"{source} is a {original.precision} export; convert from an fp32 export")
    directory = Path(out_dir).expanduser()
    manifest = dataclasses.replace(
        original,
        precision=precision,
        graphs={},
        exported_with=_versions(),
        quantization=INT8_QUANTIZATION if precision == "int8" else None,
    )
    with _staging(directory) as staging:
        _finish({name: source / graph.file for name, graph in original.graphs.items()}, staging, directory, manifest)
    return directory / MANIFEST_NAME


@contextlib.contextmanager
def _staging(directory: Path) -> Iterator[Path]:
    """A scratch directory beside ``directory`` (same file system, so publishing is a rename), removed afterwards."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.export-", dir=directory.parent))
    make_dir_public(staging)  # it becomes the export folder: mkdir's mode (0755 under umask 022), not mkdtemp's 0700
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _finish(source: dict[str, Path], staging: Path, directory: Path, manifest: OnnxManifest) -> None:
    """Write the graphs of ``source`` in the manifest's precision, then the manifest, and publish them."""
    graphs = _write_graphs(source, staging, manifest.family, manifest.precision)
    write_manifest(staging, dataclasses.replace(manifest, graphs=graphs))
    _publish(staging, directory)
    logger.info(
        "ONNX export of %s/%s (%s) written to %s", manifest.model, manifest.variant, manifest.precision, directory
    )
