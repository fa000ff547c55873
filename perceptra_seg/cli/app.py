"""The ``segmentor-cli`` Typer application: every command group registered on one app."""

from __future__ import annotations

import typer

from perceptra_seg import __version__

from . import auto, batch, demo, export, segment, segment_text, system, track, triton

__all__ = ["app", "main"]

app = typer.Typer(
    name="segmentor-cli",
    help="Segment Anything (SAM 1, SAM 2 / 2.1) from the command line: single images, batches, the REST service, "
    "weights and configuration. Boxes are X1 Y1 X2 Y2 and points X Y LABEL, in pixels of the original image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"segmentor-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Segment Anything from the command line."""


segment.register(app)
batch.register(app)
auto.register(app)
system.register(app)
export.register(app)
demo.register(app)
triton.register(app)
track.register(app)
segment_text.register(app)


def main() -> None:
    """Console-script entry point of ``segmentor-cli``."""
    app()
