"""``serve-triton`` (host the model on a Triton Inference Server) and ``export-triton`` (a Triton model repository)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from perceptra_seg.extras import missing_extra

from .common import CommonOptions, command, emit_json

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``serve-triton`` and ``export-triton`` to ``app``."""
    command(app, "serve-triton")(serve_triton)
    command(app, "export-triton")(export_triton)


def serve_triton(opts: CommonOptions) -> None:
    """Serve the configured model on Triton (ports, batching: the triton section); SIGTERM/SIGINT stop it cleanly.

    Needs the triton-server extra (nvidia-pytriton, numpy<2) in its own environment; see docs/triton.md.
    """
    import logging

    from perceptra_seg.triton.server import serve

    config = opts.load_config()
    if not opts.debug:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    status = serve(config, on_ready=lambda: typer.echo("triton ready", err=True))
    typer.echo("triton stopped" if status == 0 else "triton died", err=True)
    raise typer.Exit(status)


def export_triton(
    opts: CommonOptions,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model repository directory to write.")],
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default: the exporter's, 17).")] = None,
) -> None:
    """Write a Triton model repository (onnxruntime backend) for --model/--variant: encoder with dynamic batching,
    decoder_single and decoder_multi (needs the export extra). Batch size and queue delay: the triton section."""
    config = opts.load_config()
    try:
        from perceptra_seg.backends.export import DEFAULT_OPSET
        from perceptra_seg.triton.repository import export_triton_repository
    except ImportError as exc:
        raise missing_extra("export", exc) from None
    models = export_triton_repository(config, out, opset=opset if opset is not None else DEFAULT_OPSET)
    if opts.json:
        emit_json({"repository": str(out), "models": {name: str(path) for name, path in models.items()}})
        return
    typer.echo(f"Triton model repository written to {out}:")
    for name, path in models.items():
        typer.echo(f"  {name}: {path}")
