"""``segmentor-cli serve-triton``: a real Triton Inference Server (through PyTriton) hosting the configured model.

The ``tritonserver`` binary, its Python backend and the backend stubs ship in the ``nvidia-pytriton`` wheel (extra
``[triton-server]``; it needs numpy<2, so it lives in its own environment, see docs/triton.md). The model runs in
this process (the torch backend); Triton forwards each execution to the callables of
:mod:`perceptra_seg.triton.functions`. Models and their tensors: :mod:`perceptra_seg.triton.protocol`.

Start-up fix applied here: the Python backend stub links ``libpython3.X.so`` found through the library path, which
may be the system's copy of an older patch release than the interpreter running us; such a mismatch fails inside
``multiprocessing.resource_tracker`` (``'_thread.RLock' object has no attribute '_recursion_count'``). The running
interpreter's own ``sysconfig`` ``LIBDIR`` is therefore put first on ``LD_LIBRARY_PATH`` before Triton starts.
"""

from __future__ import annotations

import logging
import os
import signal
import sysconfig
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..config import SegmentorConfig
from ..extras import install_command
from .functions import ModelFunctions
from .protocol import DECODER_INPUTS, DECODER_MODEL, DECODER_OUTPUTS, ENCODER_INPUT, ENCODER_MODEL, INFO_MODEL

__all__ = ["library_path", "serve", "server_settings"]

logger = logging.getLogger(__name__)

#: seconds Triton waits for in-flight requests when it is stopped (SIGTERM / SIGINT)
EXIT_TIMEOUT_S = 10


def library_path(environ: Mapping[str, str], libdir: str | None = None) -> str:
    """``LD_LIBRARY_PATH`` with this interpreter's ``sysconfig`` ``LIBDIR`` first (once), the rest kept in order."""
    first = libdir if libdir is not None else str(sysconfig.get_config_var("LIBDIR") or "")
    rest = [part for part in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if part and part != first]
    return os.pathsep.join([first, *rest] if first else rest)


def server_settings(config: SegmentorConfig) -> dict[str, Any]:
    """Keyword arguments of PyTriton's ``TritonConfig`` for ``config.triton`` (addresses, ports, metrics)."""
    triton = config.triton
    return {
        "http_address": triton.host,
        "http_port": triton.http_port,
        "grpc_address": triton.host,
        "grpc_port": triton.grpc_port,
        "metrics_address": triton.host,
        "metrics_port": triton.metrics_port,
        "allow_metrics": True,
        "allow_cpu_metrics": True,
        "exit_timeout_secs": EXIT_TIMEOUT_S,
    }


def _bind_models(triton: Any, functions: ModelFunctions, config: SegmentorConfig) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    settings = config.triton
    batcher = DynamicBatcher(max_queue_delay_microseconds=round(settings.max_queue_delay_ms * 1000))
    features = [Tensor(name=name, dtype=np.float32, shape=(-1, -1, -1)) for name in functions.feature_names]
    triton.bind(
        model_name=ENCODER_MODEL,
        infer_func=functions.encoder,
        inputs=[Tensor(name=ENCODER_INPUT, dtype=np.float32, shape=(3, -1, -1))],
        outputs=features,
        config=ModelConfig(batching=True, max_batch_size=settings.max_batch_size, batcher=batcher),
        strict=True,
    )
    shapes = {"point_coords": (-1, -1, 2), "point_labels": (-1, -1), "boxes": (-1, 4), "mask_inputs": (-1, 1, -1, -1)}
    dtypes = {"point_labels": np.int64}
    prompt_inputs = [
        Tensor(name=name, dtype=dtypes.get(name, np.float32), shape=shapes[name], optional=True)
        for name in DECODER_INPUTS
    ]
    triton.bind(
        model_name=DECODER_MODEL,
        infer_func=functions.decoder,
        inputs=[
            *(Tensor(name=name, dtype=np.float32, shape=(-1, -1, -1, -1)) for name in functions.feature_names),
            *prompt_inputs,
            Tensor(name="multimask", dtype=np.bool_, shape=(1,)),
        ],
        outputs=[
            Tensor(name=DECODER_OUTPUTS[0], dtype=np.float32, shape=(-1, -1, -1, -1)),
            Tensor(name=DECODER_OUTPUTS[1], dtype=np.float32, shape=(-1, -1)),
        ],
        config=ModelConfig(batching=False),
        strict=True,
    )
    triton.bind(
        model_name=INFO_MODEL,
        infer_func=functions.info,
        inputs=[Tensor(name="query", dtype=bytes, shape=(1,))],
        outputs=[Tensor(name="info", dtype=bytes, shape=(1,))],
        config=ModelConfig(batching=False),
    )


def serve(config: SegmentorConfig, *, on_ready: Callable[[], None] | None = None) -> int:
    """Load the configured model, start Triton with the encoder, decoder and info models, and block.

    Returns (an exit status) on SIGTERM or SIGINT after Triton has stopped (0), or when Triton died (1).

    Raises:
        ModelLoadError: the model cannot be loaded, or ``nvidia-pytriton`` is not installed.
    """
    from ..backends.torch_backend import TorchBackend

    try:
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        from ..exceptions import ModelLoadError

        raise ModelLoadError(
            f"serve-triton needs nvidia-pytriton (cannot import {exc.name!r}): {install_command('triton-server')}"
            " — in its own environment, it requires numpy<2 (see docs/triton.md)"
        ) from None
    os.environ["LD_LIBRARY_PATH"] = library_path(os.environ)
    backend = TorchBackend(config)
    try:
        return _run(Triton(config=TritonConfig(**server_settings(config))), backend, config, on_ready)
    finally:
        backend.close()


def _run(triton: Any, backend: Any, config: SegmentorConfig, on_ready: Callable[[], None] | None) -> int:
    """Bind the models, start Triton and wait for SIGTERM / SIGINT (0) or Triton's death (1); always stop it."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _bind_models(triton, ModelFunctions(backend), config)
        triton.run()
        settings = config.triton
        logger.info(
            "Triton serving %s/%s: http %s:%d, grpc %s:%d, metrics %s:%d",
            backend.spec.name,
            backend.spec.variant,
            settings.host,
            settings.http_port,
            settings.host,
            settings.grpc_port,
            settings.host,
            settings.metrics_port,
        )
        if on_ready is not None:
            on_ready()
        while not stop.wait(0.5):
            if not triton.is_alive():
                logger.error("Triton Inference Server stopped unexpectedly")
                return 1
        logger.info("stopping Triton (signal received)")
        return 0
    finally:
        triton.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
