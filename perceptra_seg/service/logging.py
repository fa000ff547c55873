"""Structured logs for the service: one JSON object per line (or readable text), via structlog's stdlib bridge.

The package logs through the standard :mod:`logging` module everywhere; this module only installs a formatter on
the root logger while the app runs (installed by the lifespan, removed again on shutdown). Each line carries
``timestamp`` (UTC ISO 8601), ``level``, ``logger``, ``event`` and the ``extra`` fields of the call; inside a
request, ``request_id`` is added to every line (SDK logs included). uvicorn's own loggers are routed through the
same handler, and its access log is silenced because the service writes its own ``request`` line (see
:mod:`perceptra_seg.service.context`).

Nothing here logs request bodies, image bytes, query strings or API keys; callers pass ``key_id`` only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

from ..config import LoggingConfig
from .request_context import current_request_id

__all__ = ["configure_logging"]

_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "request_id" not in event:
        request_id = current_request_id()
        if request_id is not None:
            event["request_id"] = request_id
    return event


def _drop_duplicates(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop record attributes other handlers/uvicorn leave behind (``message`` repeats ``event``)."""
    event.pop("message", None)
    event.pop("color_message", None)
    return event


def build_formatter(config: LoggingConfig) -> logging.Formatter:
    """A :class:`logging.Formatter` rendering records as JSON (``format: json``) or aligned text."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if config.format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    pre_chain: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_duplicates,
        _add_request_id,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def configure_logging(config: LoggingConfig, stream: Any = None) -> Callable[[], None]:
    """Install the service's log handler on the root logger at ``config.level``.

    Args:
        config: level and format.
        stream: where lines go (default ``sys.stderr``).

    Returns:
        A function that restores the previous logging setup.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(build_formatter(config))
    root = logging.getLogger()
    saved_root_level = root.level
    root.addHandler(handler)
    root.setLevel(config.level)
    saved: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []
    for name in (*_UVICORN_LOGGERS, "uvicorn.access"):
        log = logging.getLogger(name)
        saved.append((log, list(log.handlers), log.propagate, log.level))
        log.handlers = []
        log.propagate = True
        log.setLevel(logging.NOTSET)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(saved_root_level)
        for log, handlers, propagate, level in saved:
            log.handlers = handlers
            log.propagate = propagate
            log.setLevel(level)

    return restore
