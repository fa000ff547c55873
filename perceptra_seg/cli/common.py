"""What every ``segmentor-cli`` command shares: the common options, config building, error handling and output.

Every command is registered through :func:`command`, which

* appends the common options (``--config``, ``--backend``, ``--model``, ``--variant``, ``--checkpoint``,
  ``--device``, ``--precision``, ``--json``, ``--debug``) to the command's own and hands them over as one
  :class:`CommonOptions`;
* turns every failure into one line ``error: ...`` on stderr (with ``--json``, also a JSON object
  ``{"error": {"code": ..., "message": ..., "exit_code": ...}}`` on stdout) and an exit code: **2** for bad input or
  configuration
  (:class:`~perceptra_seg.exceptions.InvalidInputError`, :class:`~perceptra_seg.exceptions.ConfigError`,
  :class:`~perceptra_seg.exceptions.NotFoundError`, unreadable files, malformed JSON), **1** for everything else
  (a checkpoint that cannot be loaded, a backend failure, an unexpected exception). ``--debug`` adds the traceback
  and debug logging.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand

from perceptra_seg.config import SegmentorConfig
from perceptra_seg.exceptions import ConfigError, InvalidInputError, NotFoundError, SegmentorError
from perceptra_seg.utils.atomic import write_bytes_atomic

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "CommonOptions",
    "command",
    "emit_json",
    "error_document",
    "exit_code_for",
    "read_json",
    "require_output_dirs",
    "require_suffix",
    "write_atomic",
]

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., Any])

_COMMON_PANEL = "Common options"


@dataclass(frozen=True)
class CommonOptions:
    """The options every command takes; ``None`` means "not given on the command line".

    ``config`` is a YAML file (default: the ``SEGMENTOR_CONFIG`` environment variable); the other model/runtime
    options override the file and the ``SEGMENTOR_*`` environment variables.
    """

    config: Path | None = None
    backend: str | None = None
    model: str | None = None
    variant: str | None = None
    checkpoint: str | None = None
    device: str | None = None
    precision: str | None = None
    json: bool = False
    debug: bool = False

    def load_config(self) -> SegmentorConfig:
        """The effective configuration: defaults < YAML (``--config``) < ``SEGMENTOR_*`` environment < flags.

        Raises:
            ConfigError: missing or invalid YAML file, unknown keys, invalid values.
        """
        return SegmentorConfig.resolve(
            self.config,
            backend=self.backend,
            model=self.model,
            variant=self.variant,
            checkpoint_path=self.checkpoint,
            device=self.device,
            precision=self.precision,
        )

    def segmentor(self) -> Any:
        """A :class:`~perceptra_seg.Segmentor` built from :meth:`load_config` (the model is loaded now).

        A checkpoint downloaded meanwhile shows a progress bar on stderr when it is a terminal (not with ``--json``).
        """
        from perceptra_seg.core import Segmentor

        from .progress import download_bar

        config = self.load_config()
        with download_bar(enabled=not self.json):
            return Segmentor(config)


def _option(annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter("_", inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


_COMMON_PARAMETERS: dict[str, inspect.Parameter] = {
    "config": _option(
        Annotated[
            Path | None,
            typer.Option(
                "--config",
                "-c",
                envvar="SEGMENTOR_CONFIG",
                show_envvar=True,
                rich_help_panel=_COMMON_PANEL,
                help="YAML config file (see config.yaml); SEGMENTOR_* environment variables and the flags below "
                "override it.",
            ),
        ]
    ),
    "backend": _option(
        Annotated[str | None, typer.Option("--backend", rich_help_panel=_COMMON_PANEL, help="Inference runtime.")]
    ),
    "model": _option(
        Annotated[
            str | None,
            typer.Option(
                "--model",
                rich_help_panel=_COMMON_PANEL,
                help="sam_v1 | sam_v2 (SAM 2.1) | sam_v2.0 | sam_hq (SAM-HQ) | mobile_sam (MobileSAM)"
                " | edgetam (EdgeTAM).",
            ),
        ]
    ),
    "variant": _option(
        Annotated[
            str | None,
            typer.Option(
                "--variant",
                rich_help_panel=_COMMON_PANEL,
                help="vit_b|vit_l|vit_h (sam_v1); hiera_tiny|hiera_small|hiera_base_plus|hiera_large (sam_v2*).",
            ),
        ]
    ),
    "checkpoint": _option(
        Annotated[
            str | None,
            typer.Option(
                "--checkpoint",
                rich_help_panel=_COMMON_PANEL,
                help="Meta checkpoint file, transformers directory or hub id (default: download Meta's file).",
            ),
        ]
    ),
    "device": _option(
        Annotated[
            str | None, typer.Option("--device", rich_help_panel=_COMMON_PANEL, help="auto | cpu | cuda | cuda:N.")
        ]
    ),
    "precision": _option(
        Annotated[
            str | None, typer.Option("--precision", rich_help_panel=_COMMON_PANEL, help="auto | fp32 | fp16 | bf16.")
        ]
    ),
    "json": _option(
        Annotated[bool, typer.Option("--json", rich_help_panel=_COMMON_PANEL, help="Machine-readable JSON on stdout.")],
        False,
    ),
    "debug": _option(
        Annotated[
            bool,
            typer.Option("--debug", rich_help_panel=_COMMON_PANEL, help="Show tracebacks and debug logs on errors."),
        ],
        False,
    ),
}


def command(
    group: typer.Typer, name: str, *, cls: type[TyperCommand] | None = None, own_logging: bool = True
) -> Callable[[F], F]:
    """Register ``func(opts: CommonOptions, **own_options)`` as command ``name`` of ``group``.

    The command's signature as Typer sees it is its own options followed by the common ones; the wrapper collects
    the common ones into ``opts`` and applies the error policy described in the module docstring.

    Args:
        cls: Typer command class (for options Typer cannot declare, see ``segment-points``).
        own_logging: while the command runs, show the package's warnings (``--debug``: debug records) on stderr.
            ``serve`` passes ``False``: the service configures logging itself (``logging`` section).
    """

    def decorate(func: F) -> F:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "opts"]
        common = [p.replace(name=key) for key, p in _COMMON_PARAMETERS.items()]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            opts = CommonOptions(**{key: kwargs.pop(key) for key in _COMMON_PARAMETERS})
            with _stderr_logging(opts.debug) if own_logging else contextlib.nullcontext():
                try:
                    return func(opts=opts, **kwargs)
                except (typer.Exit, typer.Abort):
                    raise
                except KeyboardInterrupt:
                    typer.echo("error: interrupted", err=True)
                    raise typer.Exit(130) from None
                except Exception as exc:  # the one place where any failure becomes an exit code
                    if opts.debug:
                        traceback.print_exc(file=sys.stderr)
                    typer.echo(f"error: {one_line(exc)}", err=True)
                    if opts.json:
                        emit_json({"error": error_document(exc)})
                    raise typer.Exit(exit_code_for(exc)) from None

        parameters = own + common
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        group.command(name, cls=cls)(wrapper)
        return func

    return decorate


def exit_code_for(exc: BaseException) -> int:
    """2 for bad input/config (including unreadable files and malformed JSON), 1 for any other failure."""
    if isinstance(exc, (InvalidInputError, ConfigError, NotFoundError)):
        return EXIT_BAD_INPUT
    if isinstance(exc, SegmentorError):
        return EXIT_FAILURE
    if isinstance(exc, (OSError, ValueError)):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


def error_document(exc: BaseException) -> dict[str, Any]:
    """``{"code", "message", "exit_code"}`` of a failure, for ``--json``; codes are the REST service's
    (``invalid_input``, ``invalid_config``, ``model_load_error``, ...; ``internal_error`` for anything unexpected)."""
    if isinstance(exc, SegmentorError):
        code = exc.code
    elif isinstance(exc, (OSError, ValueError)):
        code = "invalid_input"
    else:
        code = "internal_error"
    return {"code": code, "message": one_line(exc), "exit_code": exit_code_for(exc)}


def require_suffix(path: Path | None, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse an output file whose extension says another format than the one written (``mask.jpg`` for a PNG).

    Raises:
        InvalidInputError: ``path``'s extension (case-insensitive) is not one of ``suffixes``.
    """
    if path is not None and path.suffix.lower() not in suffixes:
        found = f"'{path.suffix}'" if path.suffix else "no extension"
        raise InvalidInputError(
            f"{what} {path} has {found}, but it is written as {' or '.join(_FILE_KIND[s] for s in suffixes)}; "
            f"name it {' or '.join('*' + s for s in suffixes)}"
        )


_FILE_KIND = {".png": "PNG (.png)", ".json": "JSON (.json)"}


def one_line(exc: BaseException) -> str:
    """The exception message on one line; unexpected exception types are named so the line stays meaningful."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (SegmentorError, OSError, ValueError)):
        return text
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _stderr_logging(debug: bool) -> Iterator[None]:
    """Send the package's log records to the current stderr while one command runs (WARNING, or DEBUG)."""
    with log_level("perceptra_seg", logging.DEBUG if debug else logging.WARNING) as logger:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)


@contextlib.contextmanager
def log_level(name: str, level: int) -> Iterator[logging.Logger]:
    """Set logger ``name`` to ``level`` for the duration of the block (e.g. INFO for download progress)."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield logger
    finally:
        logger.setLevel(previous)


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing file or malformed JSON is an :class:`InvalidInputError` naming ``what``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{what} {path} is not valid JSON: {exc}") from None


def require_output_dirs(*paths: Path | None) -> None:
    """Fail before any work is done when an output file's directory does not exist."""
    for path in paths:
        if path is not None and not path.expanduser().parent.is_dir():
            raise InvalidInputError(f"output directory does not exist: {path.expanduser().parent}")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path`` (never a half-written file).

    The file gets the permissions ``open()`` would give it (``0o666 & ~umask``), not ``mkstemp``'s 0600.
    """
    path = path.expanduser()
    require_output_dirs(path)
    write_bytes_atomic(path, data.encode("utf-8") if isinstance(data, str) else data)


def emit_json(value: Any) -> None:
    """Print one JSON document on stdout (no colours, no wrapping)."""
    typer.echo(json.dumps(value, indent=2))
