"""``demo``: segment the bundled sample image from a box and from a click, offline unless told otherwise.

Which model runs:

* a model is chosen — ``--model``, ``--variant`` or ``--checkpoint`` on the command line, or a model name, variant
  or checkpoint other than the defaults (``sam_v2``, none, none) from ``SEGMENTOR_MODEL_*`` or the YAML file: that
  model, exactly as every other command would load it (without a checkpoint, Meta's file is downloaded once);
* otherwise the packaged ``demo`` model: a tiny SAM trained on synthetic shapes, shipped with the package, so the
  command works on a machine without network or weights. (A YAML file that spells out the defaults, like the
  repository's ``config.yaml``, chooses nothing.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from perceptra_seg.config import ModelConfig, SegmentorConfig

from .common import CommonOptions, command, emit_json

_MODEL_CHOICE = ("name", "variant", "checkpoint_path")

__all__ = ["register"]


def _chooses_a_model(opts: CommonOptions, config: SegmentorConfig) -> bool:
    """Whether the flags or the configuration pick a model (see the module docstring)."""
    if any(flag is not None for flag in (opts.model, opts.variant, opts.checkpoint)):
        return True
    return any(getattr(config.model, f) != ModelConfig.model_fields[f].default for f in _MODEL_CHOICE)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    command(app, "demo")(demo)


def demo(
    opts: CommonOptions,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder for mask_box.png, mask_points.png, overlay.png, results.json."),
    ] = Path("demo_output"),
) -> None:
    """Segment the bundled sample image (offline demo model unless a model, variant or checkpoint is configured)."""
    from perceptra_seg.core import Segmentor
    from perceptra_seg.demo.run import SWITCH_HINT, run_demo

    config = opts.load_config()
    packaged = not _chooses_a_model(opts, config)
    if packaged:
        model = config.model.model_copy(update={"name": "demo", "variant": "tiny"})
        config = config.model_copy(update={"model": model})
    with Segmentor(config) as segmentor:
        summary = run_demo(out, segmentor)
    if opts.json:
        emit_json({**summary, "out_dir": str(out.resolve())})
        return
    folder, image, model_info = out.resolve(), summary["image"], summary["model"]
    typer.echo(
        f"Segmented {image['file']} ({image['width']}x{image['height']}) "
        f"with {model_info.get('model')}/{model_info.get('variant')}:"
    )
    for key in ("box", "points"):
        entry = summary[key]
        typer.echo(
            f"  from {key:<6}  score {entry['score']:.3f}  area {entry['area']} px  -> {folder / entry['mask_file']}"
        )
    typer.echo(f"  overlay  -> {folder / 'overlay.png'}")
    typer.echo(f"  details  -> {folder / 'results.json'}")
    if packaged:
        typer.echo("")
        typer.echo(SWITCH_HINT)
