"""Optional extras: the one install line to quote, and the error raised when an extra is missing.

This project is installed from its source, never from the package index: the name ``perceptra-seg`` on PyPI
belongs to a different, older project. Every message that tells a user to install something goes through
:func:`install_command`, so it names this project's repository.
"""

from __future__ import annotations

from .exceptions import ConfigError, ModelLoadError

__all__ = ["PROJECT_URL", "install_command", "missing_extra"]

#: The project's repository (``[project.urls] Homepage`` in pyproject.toml).
PROJECT_URL = "https://github.com/perceptra/perceptra-seg"

# What each extra provides, for the error message.
_PROVIDES = {
    "torch": "the torch backend (PyTorch and transformers)",
    "onnx": "the onnx backend (ONNX Runtime)",
    "openvino": "the openvino backend (OpenVINO and ONNX Runtime)",
    "export": "ONNX export (PyTorch, transformers, onnx and ONNX Runtime)",
    "server": "the REST service (FastAPI and uvicorn)",
    "cli": "segmentor-cli (Typer and rich)",
    "triton": "the triton backend (tritonclient)",
    "triton-server": "segmentor-cli serve-triton (nvidia-pytriton, needs numpy<2)",
    "supervision": "the supervision integration (perceptra_seg.integrations.supervision)",
    "redis": "shared service state in Redis (server.state = redis)",
    "ray": "Ray Data batch jobs and Ray Serve replicas (segmentor-cli batch --engine ray, serve --engine ray)",
}


def install_command(extra: str) -> str:
    """The command that installs ``extra`` of this project from its repository (not from the package index)."""
    return f'pip install "perceptra-seg[{extra}] @ git+{PROJECT_URL}"'


def missing_extra(extra: str, exc: ImportError) -> ModelLoadError | ConfigError:
    """The error to raise when importing ``extra``'s dependencies failed with ``exc``.

    A missing runtime (``torch``, ``onnx``, ``export``) means the model cannot load: :class:`ModelLoadError`. A
    missing front end or integration (``server``, ``cli``, ``supervision``, ``redis``, ``ray``) is an installation
    that does not match what was asked for: :class:`ConfigError`. The message names the missing module and the
    install line (from source; inside a clone ``pip install ".[extra]"`` does the same).
    """
    module = _missing_module(exc)
    message = (
        f"{_PROVIDES.get(extra, 'this feature')} needs the '{extra}' extra, which is not installed "
        f"(cannot import {module!r}): {install_command(extra)} (in a clone of the repository: "
        f'pip install ".[{extra}]"; the "perceptra-seg" on the package index is a different project)'
    )
    if extra in ("server", "cli", "supervision", "redis", "ray"):
        return ConfigError(message)
    return ModelLoadError(message)


def _missing_module(exc: ImportError) -> str:
    """The name of the module that could not be imported (also when a backend re-raised the error as its own)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ImportError) and cause.name:
            return cause.name
        cause = cause.__cause__
    return str(exc)
