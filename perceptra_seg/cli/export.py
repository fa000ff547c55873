"""``export-onnx``: trace the configured model to ONNX graphs for the ``onnx`` backend."""

from __future__ import annotations

from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from perceptra_seg.extras import missing_extra

from .common import CommonOptions, command, emit_json

__all__ = ["register"]


class Quantize(str, Enum):
    """Quantisation schemes of ``--quantize``."""

    int8 = "int8"


def register(app: typer.Typer) -> None:
    """Add ``export-onnx`` to ``app``."""
    command(app, "export-onnx")(export_onnx)


def export_onnx(
    opts: CommonOptions,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Export directory (default: where the onnx backend looks for this model)."),
    ] = None,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default: the exporter's, 17).")] = None,
    quantize: Annotated[
        Quantize | None, typer.Option("--quantize", help="Dynamic INT8 quantisation of the MatMul weights.")
    ] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="float16 encoder (decoders stay float32).")] = False,
) -> None:
    """Export the image encoder and the mask decoders of --model/--variant to ONNX (needs the export extra)."""
    config = opts.load_config()
    try:
        from perceptra_seg.backends import export as exporter
        from perceptra_seg.backends.onnx_manifest import read_manifest
    except ImportError as exc:
        raise missing_extra("export", exc) from None
    manifest_path = exporter.export_onnx(
        config,
        out,
        opset=opset if opset is not None else exporter.DEFAULT_OPSET,
        quantize=quantize.value if quantize is not None else None,
        fp16=fp16,
    )
    manifest = read_manifest(manifest_path.parent)
    data = {
        "manifest": str(manifest_path),
        "model": manifest.model,
        "variant": manifest.variant,
        "precision": manifest.precision,
        "opset": manifest.opset,
        "graphs": {name: asdict(graph) for name, graph in manifest.graphs.items()},
    }
    if opts.json:
        emit_json(data)
        return
    typer.echo(f"exported {manifest.model}/{manifest.variant} ({manifest.precision}, opset {manifest.opset}):")
    for name, graph in manifest.graphs.items():
        typer.echo(f"  {name}: {manifest_path.parent / graph.file} ({graph.bytes / 2**20:.1f} MiB)")
